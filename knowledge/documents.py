"""Turn files into (title, clean text) pairs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SUFFIXES = (".txt", ".md")


class UnsupportedDocument(ValueError):
    """A file the knowledge base cannot read; the message is fit to show a user."""


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    text: str

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


def content_hash(text: str) -> str:
    """Hash of the normalised text, so whitespace-only edits count as the same content."""
    normalised = re.sub(r"\s+", " ", text).strip()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def _title_from(text: str, fallback: str) -> str:
    for line in text.splitlines():
        m = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            return m.group(1).strip()[:256]
        if line.strip():
            break
    return fallback[:256]


def parse_text(text: str, title: str | None = None, fallback_title: str = "Untitled") -> ParsedDocument:
    """Clean plain or Markdown text; the title is given, the first heading, or the fallback."""
    clean = text.replace("\r\n", "\n").replace("\x00", "").strip()
    if not clean:
        raise UnsupportedDocument("The document is empty: there is no text to add.")
    return ParsedDocument(title=(title or _title_from(clean, fallback_title)).strip(), text=clean)


def parse_file(path: Path, data: bytes | None = None) -> ParsedDocument:
    """Read a supported file into a document; raises `UnsupportedDocument` with a clear reason."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedDocument(
            f"'{path.name}' is not a supported type. Supported: {', '.join(SUPPORTED_SUFFIXES)}."
        )
    raw = data if data is not None else path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedDocument(f"'{path.name}' is not UTF-8 text.") from exc
    return parse_text(text, fallback_title=path.stem.replace("_", " ").replace("-", " "))
