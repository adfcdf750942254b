"""Okapi BM25: the lexical half of retrieval.

The dense index finds chunks that mean something close to the question; BM25 over whole
documents (title, one-line summary and text) says which of those documents use the question's
own words, weighted by how rare each word is in the knowledge base. `knowledge.retrieval.rank`
adds a share of it to each candidate chunk's score (`Ranking.document_bm25`). Scoring a question
only touches the candidates' documents, so a large knowledge base costs memory (one term count
per word and document), not time per question.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

_TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class CorpusStats:
    """What BM25 needs of the whole collection: how many texts, their average length in words
    and in how many texts each word occurs. Small (one number per word) and saved as JSON, so
    a process that only scores a few candidate texts need not read every text first."""

    texts: int
    average: float
    df: dict[str, int]

    @classmethod
    def of(cls, counts: Iterable[Mapping[str, int]]) -> CorpusStats:
        df: Counter[str] = Counter()
        n = total = 0
        for tf in counts:
            n += 1
            total += sum(tf.values())
            df.update(tf.keys())
        return cls(n, total / max(n, 1), dict(df))

    def to_json(self) -> dict:
        return {"texts": self.texts, "average": self.average, "df": self.df}

    @classmethod
    def from_json(cls, data: dict) -> CorpusStats:
        return cls(int(data["texts"]), float(data["average"]),
                   {str(w): int(d) for w, d in data["df"].items()})

    @classmethod
    def read(cls, path: Path, key: Sequence[int]) -> CorpusStats | None:
        """The statistics saved at `path` for the collection `key` names, else None (a file
        for another key, none, or an unreadable one: logged)."""
        try:
            data = json.loads(path.read_text())
            if tuple(data["signature"]) != tuple(key):
                return None
            return cls.from_json(data["stats"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("Ignoring unreadable BM25 statistics %s: %s", path, e)
            return None

    def write(self, path: Path, key: Sequence[int]) -> None:
        """Save atomically under `key` (readers see the old file or the new one); failures are
        logged, and the next process counts again."""
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"signature": list(key), "stats": self.to_json()},
                                      separators=(",", ":")))
            tmp.replace(path)
        except OSError as e:  # a read-only data dir: searches still work, counted each time
            logger.warning("Could not save BM25 statistics to %s: %s", path, e)
            tmp.unlink(missing_ok=True)


class BM25(Generic[K]):
    """Okapi BM25 over `texts` (key → text), k1 = 1.2, b = 0.75. With `stats` (of a larger
    collection `texts` belongs to), `texts` need only be the ones to score: the words' rarity
    and the average length are the collection's."""

    def __init__(self, texts: Mapping[K, str], k1: float = 1.2, b: float = 0.75,
                 stats: CorpusStats | None = None) -> None:
        self.k1, self.b = k1, b
        self.tf: dict[K, Counter[str]] = {key: Counter(tokens(text)) for key, text in
                                          texts.items()}
        self.length = {key: sum(tf.values()) for key, tf in self.tf.items()}
        self.stats = stats or CorpusStats.of(self.tf.values())
        self.average = self.stats.average
        self._idf: dict[str, float] = {}
        self._postings: dict[str, list[K]] | None = None

    def idf(self, word: str) -> float:
        idf = self._idf.get(word)
        if idf is None:
            n, d = self.stats.texts, self.stats.df.get(word, 0)
            idf = self._idf[word] = math.log(1 + (n - d + 0.5) / (d + 0.5))
        return idf

    def score(self, query_tokens: Iterable[str], key: K) -> float:
        tf = self.tf.get(key)
        if not tf:
            return 0.0
        norm = self.k1 * (1 - self.b + self.b * self.length[key] / self.average)
        return sum(self.idf(w) * tf[w] * (self.k1 + 1) / (tf[w] + norm)
                   for w in set(query_tokens) if w in tf)

    def scores(self, query: str, keys: Iterable[K] | None = None) -> dict[K, float]:
        """{key: score > 0} for `keys`, or for every text that shares a word with `query`."""
        words = set(tokens(query))
        if keys is None:
            if self._postings is None:
                self._postings = {}
                for key, tf in self.tf.items():
                    for w in tf:
                        self._postings.setdefault(w, []).append(key)
            keys = {key for w in words for key in self._postings.get(w, ())}
        out = {key: self.score(words, key) for key in keys}
        return {key: s for key, s in out.items() if s > 0}

    def relative(self, query: str, keys: Iterable[K]) -> dict[K, float]:
        """Scores of `keys` divided by the best among them (0..1): what ranking adds up."""
        found = self.scores(query, keys)
        best = max(found.values(), default=0.0)
        return {key: s / best for key, s in found.items()} if best > 0 else {}
