"""Turn files into (title, clean text) pairs."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf")
# Page furniture, not content: dropped from HTML before the text is taken.
_BOILERPLATE_TAGS = ("script", "style", "nav", "header", "footer", "aside", "form", "noscript",
                     "select", "button", "iframe", "svg", "template")
_BOILERPLATE_ATTR = re.compile(
    r"(^|[\s_-])(nav|navbar|menu|mainmenu|submenu|sidebar|breadcrumbs?|footer|header|banner|"
    r"searchmenu|search|cookie|toc|nosearch|skip|navheader|navfooter)([\s_-]|$)", re.I)
_BLOCK_TAGS = ("p", "div", "li", "pre", "tr", "table", "ul", "ol", "blockquote", "dd", "dt",
               "section", "article", "main", "br", "hr", "dl", "figure", "caption")


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


def _decode(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedDocument(f"'{name}' is not UTF-8 text.") from exc
    if looks_binary(text):
        raise UnsupportedDocument(f"'{name}' holds binary data, not text (NUL bytes or mostly "
                                  "unprintable characters); it was not added.")
    return text


def looks_binary(text: str) -> bool:
    """True for decoded bytes that are not prose: any NUL, or over 10% control characters."""
    if "\x00" in text:
        return True
    sample = text[:20000]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f" or ch == "\ufffd")
    return control > 0.1 * max(len(sample), 1)


def html_to_text(html: str) -> tuple[str | None, str]:
    """(title, text) of an HTML page: headings become Markdown headings, furniture is dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    summary = _summary(soup)
    if title and summary and summary.lower() not in title.lower():
        title = f"{title} — {summary}"
    for tag in soup(_BOILERPLATE_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed or tag.attrs is None:
            continue
        marks = " ".join([str(tag.get("id") or ""), *map(str, tag.get("class") or [])])
        if marks.strip() and _BOILERPLATE_ATTR.search(marks):
            tag.decompose()
    body = soup.body or soup
    for level in range(1, 7):
        for h in body.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    for tag in body.find_all(_BLOCK_TAGS):
        tag.insert_before("\n\n" if tag.name not in ("br", "li", "tr") else "\n")
        tag.insert_after("\n")
    lines = [re.sub(r"[ \t\xa0]+", " ", ln).strip() for ln in body.get_text().split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return title, text


def _summary(soup: Any) -> str | None:
    """A page's one-line summary where the format has one: a manual page's purpose line
    (DocBook's refpurpose) or the page's meta description."""
    purpose = soup.select_one(".refnamediv p, .refpurpose")
    text = purpose.get_text(" ", strip=True) if purpose else None
    if text and "—" in text:
        text = text.split("—", 1)[1]
    if not text:
        meta = soup.find("meta", attrs={"name": "description"})
        text = str(meta.get("content") or "") if meta else None
    text = re.sub(r"\s+", " ", text or "").strip()
    return text[:160] or None


def pdf_to_text(data: bytes, name: str) -> tuple[str | None, str]:
    """(title, text) from a PDF's text layer."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise UnsupportedDocument(f"'{name}' could not be read as a PDF ({exc}).") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise UnsupportedDocument(f"'{name}' has no text layer (a scanned PDF?); "
                                  "only PDFs with selectable text can be added.")
    return title, text


def parse_file(path: Path, data: bytes | None = None) -> ParsedDocument:
    """Read a supported file into a document; raises `UnsupportedDocument` with a clear reason."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedDocument(
            f"'{path.name}' is not a supported type. Supported: {', '.join(SUPPORTED_SUFFIXES)}."
        )
    raw = data if data is not None else path.read_bytes()
    fallback = path.stem.replace("_", " ").replace("-", " ")
    title: str | None = None
    if suffix in (".html", ".htm"):
        title, text = html_to_text(_decode(raw, path.name))
    elif suffix == ".pdf":
        title, text = pdf_to_text(raw, path.name)
    else:
        text = _decode(raw, path.name)
    if not text.strip():
        raise UnsupportedDocument(f"'{path.name}' has no text to add. Supported types: "
                                  f"{', '.join(SUPPORTED_SUFFIXES)} with some text in them.")
    return parse_text(text, title=title or None, fallback_title=fallback)
