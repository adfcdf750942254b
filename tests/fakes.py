"""Hand-written fakes for the model and the embedder (fast unit tests; no weights loaded)."""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable

from bot.model import Generation
from bot.prompting import ChatMessages


class FakeChatModel:
    """Replies from a queue (or echoes), and records every chat it was asked to answer."""

    def __init__(self, *replies: str, adapter_version: str = "base") -> None:
        self.replies: deque[str | Exception] = deque(replies)
        self.calls: list[ChatMessages] = []
        self.adapter_version = adapter_version
        self.gate: threading.Event | None = None  # set to make generate() wait
        self.word_delay = 0.0  # seconds between streamed words, to look like a real model

    def queue(self, *replies: str | Exception) -> None:
        self.replies.extend(replies)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages: ChatMessages,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        self.calls.append(messages)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        question = messages[-1]["content"].rsplit("Question: ", 1)[-1]
        reply = self.replies.popleft() if self.replies else f"echo: {question[-40:]}"
        if isinstance(reply, Exception):
            raise reply
        if on_text:
            words = reply.split(" ")
            for i in range(1, len(words) + 1):
                on_text(" ".join(words[:i]))
                time.sleep(self.word_delay)
        prompt = "\n".join(f"<{m['role']}>{m['content']}" for m in messages)
        return Generation(text=reply, prompt=prompt, adapter_version=self.adapter_version,
                          new_tokens=len(reply.split()), seconds=0.0)


class FakeEmbedder:
    """Bag-of-words hashing vectors: texts sharing words are close, and it is deterministic."""

    dim = 256
    max_tokens = 256

    def __init__(self) -> None:
        self.calls = 0

    def _tokens(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        vectors = []
        for text in texts:
            vec = [0.0] * self.dim
            for tok in self._tokens(text):
                vec[int(hashlib.md5(tok.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vectors.append([v / norm for v in vec])
        return vectors

    def count_tokens(self, text: str) -> int:
        # Like a word-piece tokenizer, count CJK characters one by one.
        return sum(len(t) if re.match(r"[\u3040-\u9fff\uac00-\ud7af]", t) else 1
                   for t in self._tokens(text))
