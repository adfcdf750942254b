"""Shaping answer text for chat: Telegram-sized parts, split where a reader would split.

Replies are sent as plain text (no parse mode), so no formatting entity can ever make Telegram
reject a message, and there is no entity a split could cut in half.
"""

from __future__ import annotations

import re

TELEGRAM_LIMIT = 4096
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def _cut_point(text: str, limit: int) -> int:
    """Where to end the first part of `text` (at most `limit` characters)."""
    window = text[:limit]
    for boundary in ("\n\n", "\n"):
        at = window.rfind(boundary)
        if at > limit // 3:
            return at + len(boundary)
    ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    if ends and ends[-1] > limit // 3:
        return ends[-1]
    at = max(window.rfind(" "), window.rfind("\t"))
    if at > limit // 3:
        return at + 1
    return limit  # one unbroken run of characters (e.g. a URL or CJK text without spaces)


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Parts of at most `limit` characters, cut at paragraphs, then lines, sentences, spaces."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        part = rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts or [""]
