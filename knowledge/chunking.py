"""Split documents into retrieval chunks along their structure.

Headings and paragraphs are the first cut; a paragraph too long for the embedding model is cut
at sentence ends, and a sentence still too long is cut into token-sized windows. Lengths are
measured with the embedding model's own tokenizer, so scripts without spaces (Korean, Japanese,
Chinese) are sized correctly. Each chunk carries its section heading, and neighbouring chunks
share a little overlap so a fact split across a boundary is still found.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TokenCounter = Callable[[str], int]

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
PATH_SEPARATOR = " › "
_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s+|(?<=[。！？])")


def _paragraphs(text: str, section_path: bool = False) -> list[tuple[str, str]]:
    """(heading, paragraph) pairs in order; the heading is the nearest one above, or with
    `section_path` the chain of headings above it ("Install › Linux › Debian")."""
    heading = ""
    stack: list[tuple[int, str]] = []
    out: list[tuple[str, str]] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        body: list[str] = []
        for line in lines:
            m = _HEADING.match(line)
            if m:
                if body:
                    out.append((heading, "\n".join(body)))
                    body = []
                level, name = len(m.group(1)), m.group(2).strip()
                stack = [(lv, h) for lv, h in stack if lv < level] + [(level, name)]
                heading = PATH_SEPARATOR.join(h for _, h in stack) if section_path else name
            else:
                body.append(line.rstrip())
        if body:
            out.append((heading, "\n".join(body)))
    return out


def _split_long(piece: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Cut a too-long paragraph at sentence ends, then into character windows if needed."""
    if count(piece) <= max_tokens:
        return [piece]
    sentences = [s for s in _SENTENCE_END.split(piece) if s.strip()]
    if len(sentences) > 1:
        return [part for s in sentences for part in _split_long(s, max_tokens, count)]
    # One enormous "sentence": shrink a character window until it fits the token budget.
    parts: list[str] = []
    rest = piece
    while rest:
        size = len(rest)
        while size > 1 and count(rest[:size]) > max_tokens:
            size = max(1, int(size * max_tokens / max(count(rest[:size]), 1) * 0.95))
        cut = rest.rfind(" ", 0, size) if size < len(rest) else size
        cut = cut if cut > size // 2 else size  # no space near the end: cut mid-run (CJK)
        parts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return [p for p in parts if p]


def _tail(piece: str, overlap_tokens: int, count: TokenCounter) -> str:
    """The last whole sentences of `piece` that fit in `overlap_tokens`."""
    kept: list[str] = []
    for sentence in reversed([s for s in _SENTENCE_END.split(piece) if s.strip()]):
        if count(" ".join([sentence, *kept])) > overlap_tokens:
            break
        kept.insert(0, sentence)
    return " ".join(kept)


def chunk_text(text: str, count: TokenCounter, max_tokens: int = 200,
               overlap_tokens: int = 40, section_path: bool = False) -> list[str]:
    """Chunks of at most about `max_tokens` tokens (heading included), in document order;
    each starts with its heading, or its whole section path with `section_path`."""
    chunks: list[str] = []
    current: list[str] = []
    current_heading = ""

    def flush() -> None:
        if current:
            prefix = f"{current_heading}\n" if current_heading else ""
            chunks.append(prefix + "\n\n".join(current))

    for heading, para in _paragraphs(text, section_path):
        budget = max_tokens - (count(heading) + 1 if heading else 0)
        for piece in _split_long(para, max(budget, 16), count):
            size = count(piece)
            used = sum(count(p) for p in current)
            if current and (heading != current_heading or used + size > budget):
                flush()
                tail = _tail(current[-1], overlap_tokens, count) if heading == current_heading else ""
                current = [tail] if tail and count(tail) + size <= budget else []
            current_heading = heading
            current.append(piece)
    flush()
    return chunks
