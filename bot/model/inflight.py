"""The chats whose answers are being written: each joins with its prompt read, gets one token a
step, streams its text, and leaves as soon as its own answer ends (bot/model/decoder.py has the
arithmetic). Choosing a token follows transformers' `generate` with the same settings: the
repetition penalty and the ban on repeating any 4-token run of the prompt or answer, then
greedy or sampled; an answer ends at the end-of-text token, a stop string, the token limit or
the time limit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bot.model.base import STOP_STRINGS, Generation
from bot.model.decoder import Decoder, Slots

logger = logging.getLogger(__name__)


@dataclass
class Request:
    """One `generate` call waiting for its answer."""

    prompt: str
    on_text: Callable[[str], None] | None
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | None = None
    error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@dataclass(frozen=True)
class Choosing:
    """How the next token is chosen and when an answer ends."""

    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_time: float | None = None
    end_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = tuple(STOP_STRINGS)


@dataclass
class Row:
    """A chat in flight: its tokens so far (prompt, then answer) and the next one to feed."""

    request: Request
    ids: list[int]
    prompt_length: int
    next_token: int
    started: float
    ngrams: dict[tuple[int, ...], set[int]] = field(default_factory=dict)
    text: str = ""

    @property
    def answer(self) -> list[int]:
        return self.ids[self.prompt_length:]


class InFlight:
    """The rows one decoder writes, one token each per `step`."""

    def __init__(self, decoder: Decoder, tokenizer: Any, choosing: Choosing, rows: int,
                 version: str) -> None:
        self.decoder, self.tokenizer, self.choosing = decoder, tokenizer, choosing
        self.slots = Slots(decoder, rows)
        self.rows: list[Row] = []
        self.version = version  # the adapter these weights carry
        self.capacity = rows

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, request: Request, ids: list[int],
             cache: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Add a chat whose prompt `ids` were read into `cache` but for the last token."""
        self.slots.add(cache, len(ids) - 1)
        row = Row(request, list(ids), len(ids), ids[-1], time.monotonic())
        n = self.choosing.no_repeat_ngram_size
        if n > 0:
            for i in range(len(ids) - n + 1):
                self._remember(row, ids[i:i + n])
        self.rows.append(row)

    @staticmethod
    def _remember(row: Row, ngram: list[int]) -> None:
        row.ngrams.setdefault(tuple(ngram[:-1]), set()).add(ngram[-1])

    def step(self) -> None:
        """One token for every row; rows whose answer ended get their result and leave. If
        the model fails, every chat in flight fails with its error (and the flight is empty)."""
        try:
            logits = self.decoder.step(self.slots, [row.next_token for row in self.rows])
            chosen = self._choose(logits)
        except Exception as exc:  # every chat in flight must learn of it
            logger.exception("Writing answers failed")
            for row in self.rows:
                row.request.fail(exc)
            self.rows.clear()
            self.slots = Slots(self.decoder, self.capacity)
            return
        # Backwards, so a row that leaves is taken by the last one, already advanced, in the
        # list as in the cache (Slots.remove): row i of both stays the same chat.
        for index in reversed(range(len(self.rows))):
            row = self.rows[index]
            if self._advance(row, chosen[index]):
                self._finish(row)
                self.rows[index] = self.rows[-1]
                self.rows.pop()
                self.slots.remove(index)
        if not self.rows and self.slots.capacity > Slots.LENGTH:
            self.slots = Slots(self.decoder, self.capacity)  # a long prompt's room, given back

    def _choose(self, logits: torch.Tensor) -> list[int]:
        choosing = self.choosing
        n = choosing.no_repeat_ngram_size
        for index, row in enumerate(self.rows):
            if choosing.repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(row.ids)), device=logits.device)
                scores = logits[index, seen]
                logits[index, seen] = torch.where(scores < 0, scores * choosing.repetition_penalty,
                                                  scores / choosing.repetition_penalty)
            if n > 0 and len(row.ids) >= n - 1:
                banned = row.ngrams.get(tuple(row.ids[len(row.ids) - n + 1:]))
                if banned:
                    logits[index, list(banned)] = float("-inf")
        if choosing.temperature <= 0:
            return logits.argmax(-1).tolist()
        logits = logits / choosing.temperature
        if 0 < choosing.top_k < logits.shape[-1]:
            floor = logits.topk(choosing.top_k, -1).values[:, -1:]
            logits = logits.masked_fill(logits < floor, float("-inf"))
        return torch.multinomial(torch.softmax(logits, -1), 1)[:, 0].tolist()

    def _advance(self, row: Row, token: int) -> bool:
        """Append `token` to `row`; whether its answer has ended."""
        choosing = self.choosing
        if token in choosing.end_ids:
            return True
        row.ids.append(token)
        row.next_token = token
        n = choosing.no_repeat_ngram_size
        if n > 0 and len(row.ids) >= n:
            self._remember(row, row.ids[-n:])
        before = len(row.text)
        row.text = str(self.tokenizer.decode(row.answer, skip_special_tokens=True))
        if row.request.on_text is not None:
            try:
                row.request.on_text(row.text)
            except Exception:  # a display callback must never break the other rows
                logger.exception("Streaming callback failed")
        # A stop string may end in this token's text, or straddle it and the one before.
        tail = row.text[max(0, before - max(map(len, choosing.stop_strings), default=0)):]
        return (len(row.answer) >= choosing.max_new_tokens
                or any(stop in tail for stop in choosing.stop_strings)
                or (choosing.max_time is not None
                    and time.monotonic() - row.started >= choosing.max_time))

    def _finish(self, row: Row) -> None:
        row.request.result = Generation(text=row.text.strip(), prompt=row.request.prompt,
                                        adapter_version=self.version,
                                        new_tokens=len(row.answer),
                                        seconds=time.monotonic() - row.started)
        row.request.done.set()
