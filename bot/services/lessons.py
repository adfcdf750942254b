"""What users taught: which knowledge-base sentence answers a question, learned from 👍, 👎 and
corrections, and recalled the next time that question, or one meaning the same, is asked.

A user who presses 👎 and writes the right answer should see it the next time, without waiting
for a night's training (which, on a 135M model and a few corrections a day, moves answers far
less: see the README). Every rated or corrected answer is a *teaching* (`Store.teachings`):
a 👍 vouches for the answer's text, a 👎 against it, a correction for its own text. For a new
question, the teachings whose question means the same (cosine of their embeddings at least
`min_similarity`) are pooled by text, each user counting once per text (their newest word on
it); texts more users vouch for than against are what users taught, best first. Answering then
puts first the knowledge-base sentence that backs such a text (`grounding.supported`),
searching the knowledge base for it when retrieval missed it (`ChatService.answer`).

Only the knowledge base's own sentences move. A text nothing in it backs ("the Flex Desk costs
€59") changes no answer, however many accounts write it; corrections the nightly screen held
back or an admin rejected are never recalled; `/forget` removes a user's teachings with their
ratings. The worst a group of accounts can do is put another true sentence of the knowledge
base first for one question, and honest 👎s and corrections outvote them.

Not every vote weighs the same: a user's word counts `reliability` (between 0 and 1), how often
their votes agreed with the other users who rated the same answer to the same question
(Laplace-smoothed, so a newcomer counts 0.5). A rater who keeps pressing 👎 on answers everyone
else finds right, or 👍 on ones everyone else corrects, counts less and less, and can no
longer cancel an honest 👍 with their 👎: in `bench/learning_loop`, two such raters had netted
the answer to "How many pages can I print for free each month?" (two 👍, two 👎) to nothing,
and its paraphrase went back to "I don't know" on the fourth day. No account counts more than
one vote, as before. A group of accounts that outvotes the honest raters of many answers lowers
their weight, but only by holding the majority on those answers, which already let it decide
them; and what any vote can move is still only which true sentence comes first.

`min_similarity` 0.8 was chosen on the learning benchmark's questions (bench/learning_loop):
15 of its 24 hand-written paraphrases are that close to the question they rephrase, while the
most similar *different* question of each is below it for all 24 (at most 0.79: "Which tram
line goes there?" and "What is the nearest tram stop?", whose answers are one sentence).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from bot.storage.training import same_text
from knowledge.embeddings import Embedder

logger = logging.getLogger(__name__)


class TeachingSource(Protocol):
    def teachings(self, limit: int = 5000) -> list[tuple[str, str, int, int]]: ...


@dataclass(frozen=True)
class Taught:
    """A text users said answers a question like the one asked."""

    text: str
    question: str     # the question it was taught for (the closest, if several)
    similarity: float  # of that question to the one asked
    score: float      # users vouching for it, minus users against it, each by `reliability`


class Lessons:
    """Recalls what users taught for a question; thread-safe, re-read every `refresh_s`."""

    def __init__(self, store: TeachingSource, embedder: Embedder, min_similarity: float = 0.8,
                 refresh_s: float = 30.0) -> None:
        self.store = store
        self.embedder = embedder
        self.min_similarity = min_similarity
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._teachings: list[tuple[str, str, int, int]] = []
        self._weights: dict[int, float] = {}  # user -> reliability
        self._vectors: dict[str, Any] = {}  # question -> unit vector (numpy)

    def forget_cache(self) -> None:
        """Read the teachings again at the next question (after a rating, in tests)."""
        with self._lock:
            self._loaded_at = float("-inf")

    def _current(self) -> tuple[list[tuple[str, str, int, int]], dict[int, float]]:
        """The teachings and the users' weights, read together (another thread may refresh)."""
        with self._lock:
            if time.monotonic() - self._loaded_at >= self.refresh_s:
                self._teachings = self.store.teachings()
                self._weights = reliability(self._teachings)
                self._loaded_at = time.monotonic()
                asked = {q for q, *_ in self._teachings}
                self._vectors = {q: v for q, v in self._vectors.items() if q in asked}
            return self._teachings, self._weights

    def weight(self, user: int) -> float:
        """How much `user`'s word counts (see `reliability`)."""
        with self._lock:
            return self._weights.get(user, NEWCOMER)

    def _embed(self, texts: list[str]) -> Any:
        import numpy as np

        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            vectors = np.asarray(self.embedder.embed(missing), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
            with self._lock:
                self._vectors.update(zip(missing, vectors, strict=True))
        with self._lock:
            return np.stack([self._vectors[t] for t in texts])

    def recall(self, question: str, most: int = 3) -> list[Taught]:
        """Up to `most` texts users taught for questions meaning the same as `question`, the
        most vouched-for first; empty when none is vouched for by more users than against."""
        if self.min_similarity <= 0:
            return []
        teachings, weights = self._current()
        if not teachings:
            return []
        asked = list(dict.fromkeys(q for q, *_ in teachings))
        vectors = self._embed([question, *asked])
        similarity = dict(zip(asked, (vectors[1:] @ vectors[0]).tolist(), strict=True))
        votes: dict[str, dict[int, int]] = {}  # text (normalised) -> user -> their vote
        shown: dict[str, Taught] = {}
        for taught_for, text, user, vote in teachings:  # newest first
            close = similarity[taught_for]
            if close < self.min_similarity or not text.strip():
                continue
            key = same_text(text)
            votes.setdefault(key, {}).setdefault(user, vote)  # a user's newest word counts
            if key not in shown or close > shown[key].similarity:
                shown[key] = Taught(text.strip(), taught_for, round(close, 3), 0)
        ranked = sorted(((sum(weights.get(u, NEWCOMER) * v for u, v in users.items()),
                          shown[key].similarity, key) for key, users in votes.items()),
                        reverse=True)
        return [Taught(shown[key].text, shown[key].question, close, round(score, 3))
                for score, close, key in ranked[:most] if score > 0]


NEWCOMER = 0.5  # the weight of a user none of whose votes can be compared with anyone's yet


def reliability(teachings: list[tuple[str, str, int, int]]) -> dict[int, float]:
    """Each user's weight: (agreements + 1) / (comparisons + 2), where a comparison is one of
    their votes on an answer text to a question (their newest) that other users voted on as
    well, not evenly, and it agrees when it has the sign of those users' net vote. Users with
    no comparison are left out (they weigh `NEWCOMER`)."""
    votes: dict[tuple[str, str], dict[int, int]] = {}
    for question, text, user, vote in teachings:  # newest first
        votes.setdefault((question, same_text(text)), {}).setdefault(user, vote)
    agreed: dict[int, int] = {}
    compared: dict[int, int] = {}
    for users in votes.values():
        total = sum(users.values())
        for user, vote in users.items():
            others = total - vote
            if others:
                compared[user] = compared.get(user, 0) + 1
                agreed[user] = agreed.get(user, 0) + ((others > 0) == (vote > 0))
    return {user: (agreed[user] + 1) / (n + 2) for user, n in compared.items()}
