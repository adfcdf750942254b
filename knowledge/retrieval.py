"""Ranking retrieved chunks: which documents, and which of their chunks, a question gets.

The dense index returns the nearest chunks; several often come from one long page, so five hits
would be two or three candidates. Ranking here orders chunks by similarity plus a share of
their document's BM25 score for the question (`knowledge.lexical`: the question's own words,
weighted by how rare they are in this knowledge base) and the feedback boost (knobs that
measured no better and stay off: a document's best chunk plus a share of its other good chunks,
a rare-word bonus by everyday English frequency), and hands out at most `per_document` chunks of
each document (then, if there are fewer documents than k, their next best chunks).
The chunk's own `score` stays its cosine similarity, so thresholds
downstream keep their meaning. Every knob was chosen by `bench/retrieval` on two corpora.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from knowledge.evidence import STOPWORDS, stem
from knowledge.index import Hit

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


@dataclass(frozen=True)
class Ranking:
    """How candidates become the top k (see the module docstring)."""

    candidates: int = 4      # dense candidates fetched per requested hit
    per_document: int = 1    # chunks of one document in the top k
    document_share: float = 0.0  # weight of a document's second and third best chunks
    lexical_weight: float = 0.0  # weight of the rare-word overlap (0..1) in a chunk's score
    document_bm25: float = 0.0   # weight of its document's BM25 score (0..1, see knowledge.lexical)


# What the product uses, chosen by bench/retrieval on both corpora (see the README).
DEFAULT_RANKING = Ranking(per_document=1, document_bm25=0.2)
# What answering uses: the nearest chunks whatever their document (see `ChatLimits.ranking`).
ANSWER_RANKING = Ranking(per_document=6)


# A follow-up ("and how do I remove it again?") is searched with the previous question's vector
# added at this weight: enough to carry the topic, not to drown what is asked now. Folding the
# texts instead made the previous question win (bench/retrieval, follow-ups on both corpora).
FOLD_WEIGHT = 0.7


def fold(vector: Sequence[float], context: Sequence[float],
         weight: float = FOLD_WEIGHT) -> list[float]:
    """The unit vector of `vector` + `weight` × `context`."""
    mixed = [a + weight * b for a, b in zip(vector, context, strict=True)]
    norm = math.sqrt(sum(x * x for x in mixed)) or 1.0
    return [x / norm for x in mixed]


@lru_cache(maxsize=65536)
def _rarity(word: str) -> float:
    """How much a word says: high for rare words, 0 for everyday ones (Zipf ≥ 6)."""
    from wordfreq import zipf_frequency

    return max(0.0, 6.0 - zipf_frequency(word, "en"))


def _terms(text: str) -> dict[str, float]:
    terms: dict[str, float] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            terms.setdefault(stem(word), _rarity(word))
    return terms


def lexical_overlap(query: str, text: str) -> float:
    """Share of the question's word weight (rare words weigh more) found in `text`, 0..1."""
    wanted = _terms(query)
    total = sum(wanted.values())
    if total <= 0:
        return 0.0
    present = _terms(text)
    return sum(w for t, w in wanted.items() if t in present) / total


def rank(query: str, hits: Sequence[Hit], k: int, ranking: Ranking,
         boosts: Mapping[str, float] | None = None,
         lexical: Mapping[int, float] | None = None) -> list[Hit]:
    """The top `k` of `hits` (nearest first, current versions only) under `ranking`, each
    chunk nudged by its feedback boost and by `lexical`, its document's BM25 score relative to
    the best candidate document's (0..1, `ranking.document_bm25` of it)."""
    if not hits:
        return []
    scored = []
    for hit in hits:
        bonus = boosts.get(hit.chunk_id, 0.0) if boosts else 0.0
        if ranking.document_bm25 and lexical:
            bonus += ranking.document_bm25 * lexical.get(hit.document_id, 0.0)
        if ranking.lexical_weight:
            bonus += ranking.lexical_weight * lexical_overlap(query, f"{hit.title}\n{hit.text}")
        scored.append((hit.score + bonus, hit))
    by_document: dict[int, list[tuple[float, Hit]]] = defaultdict(list)
    for score, hit in scored:
        by_document[hit.document_id].append((score, hit))
    # A document's best chunk stands for the document (its score plus a share of its next two
    # good chunks); the others keep their own score.
    keyed: list[tuple[float, Hit]] = []
    for chunks in by_document.values():
        chunks.sort(key=lambda pair: -pair[0])
        others = sum(max(s, 0.0) for s, _ in chunks[1:3])
        keyed.append((chunks[0][0] + ranking.document_share * others, chunks[0][1]))
        keyed.extend(chunks[1:])
    keyed.sort(key=lambda pair: -pair[0])
    out: list[Hit] = []
    skipped: list[Hit] = []
    taken: dict[int, int] = defaultdict(int)
    for _, hit in keyed:
        if taken[hit.document_id] < ranking.per_document:
            taken[hit.document_id] += 1
            out.append(hit)
            if len(out) == k:
                return out
        else:
            skipped.append(hit)
    # Fewer documents than k (a small knowledge base): fill with their next best chunks.
    return out + skipped[: k - len(out)]


def fetch_size(k: int, ranking: Ranking) -> int:
    """How many dense candidates to fetch for `k` hits: more only when the ranking can change
    which chunks make the top k (a per-document cap below k, document scores, the rare-word
    bonus); boosts only reorder what was fetched."""
    widens = (ranking.per_document < k or ranking.document_share or ranking.lexical_weight
              or ranking.document_bm25)
    return max(k * ranking.candidates, 20) if widens else k





@dataclass(frozen=True)
class Vote:
    """One user's rating of an answer and the chunks it cited: +1 for 👍, -1 for a 👎 that
    came with a correction (a 👎 alone does not say the evidence was wrong); `correction` is
    the text of that correction, `question` the question the answer answered."""

    user_id: int
    value: int
    chunk_ids: tuple[str, ...]
    correction: str = ""
    question: str = ""

    def sparing(self, holds: Callable[[str, str], bool]) -> Vote:
        """This vote without the cited chunks that hold its correction (`holds(chunk id,
        correction)`): a 👎 says the answer was wrong, not the excerpt that had it right."""
        if self.value >= 0 or not self.correction:
            return self
        return replace(self, chunk_ids=tuple(c for c in self.chunk_ids
                                             if not holds(c, self.correction)))


MAX_BOOST = 0.05    # cosine units: enough to reorder near-ties, never to lift a poor match
BOOST_USERS = 3.0   # distinct net users that give ~76% of the maximum (tanh(1))
# A boost applies to questions like the ones rated: in full from this cosine to the nearest
# rated question, not at all below the first figure, in between proportionally. Applied to every
# question, a boost raised for one question outranked the right page of its neighbours
# (bench/retrieval: postgresql's unrated questions lost 4 of 29 top hits, now none).
BOOST_REACH = (0.6, 0.8)
BOOST_QUESTIONS = 32  # rated questions kept per chunk, those most users asked first


def feedback_boosts(votes: Iterable[Vote], max_boost: float = MAX_BOOST,
                    users: float = BOOST_USERS) -> dict[str, tuple[float, int, int]]:
    """{chunk id: (boost, users up, users down)}. Each user counts once per chunk whatever
    they rated how often, and the boost is bounded by `max_boost`, so one account moves a
    chunk by at most max_boost·tanh(1/users) (0.016 with the defaults)."""
    per_user: dict[tuple[str, int], int] = defaultdict(int)
    for vote in votes:
        for cid in set(vote.chunk_ids):
            per_user[(cid, vote.user_id)] += vote.value
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (cid, _), total in per_user.items():
        if total:
            counts[cid][0 if total > 0 else 1] += 1
    return {cid: (max_boost * math.tanh((up - down) / users), up, down)
            for cid, (up, down) in counts.items() if up != down}


def boost_questions(votes: Iterable[Vote], limit: int = BOOST_QUESTIONS) -> dict[str, list[str]]:
    """{chunk id: the distinct questions whose rated answers cited it}, those asked by the most
    users first, at most `limit`: what a chunk's boost is conditional on (`reach`)."""
    askers: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for vote in votes:
        question = " ".join(vote.question.split())
        if question:
            for cid in set(vote.chunk_ids):
                askers[cid][question].add(vote.user_id)
    return {cid: sorted(asked, key=lambda q: -len(asked[q]))[:limit]
            for cid, asked in askers.items()}


def reach(similarity: float, bounds: tuple[float, float] = BOOST_REACH) -> float:
    """How much of a boost a question gets, 0..1, from its cosine to the nearest rated one."""
    low, high = bounds
    return min(1.0, max(0.0, (similarity - low) / (high - low)))


@dataclass(frozen=True)
class FeedbackBoosts:
    """The boosts searches apply: each chunk's value (`feedback_boosts`) and the rated questions
    it is for, as rows of `vectors` (unit vectors, one per distinct question; a chunk with no
    rows was computed before boosts had questions, and applies to every question)."""

    values: Mapping[str, float] = field(default_factory=dict)
    questions: Mapping[str, Sequence[int]] = field(default_factory=dict)
    vectors: Any = None  # numpy array (distinct questions, dim)

    def for_question(self, vector: Sequence[float], chunk_ids: Iterable[str]) -> dict[str, float]:
        """{chunk id: its boost for the question whose unit `vector` is given} for those of
        `chunk_ids` that have one (`reach` of the nearest rated question)."""
        import numpy as np

        out: dict[str, float] = {}
        similarities = None
        for cid in chunk_ids:
            if cid not in self.values:
                continue
            rows = self.questions.get(cid)
            if not rows:  # computed before boosts had questions: every question
                out[cid] = self.values[cid]
                continue
            if similarities is None:  # one product for every candidate
                similarities = self.vectors @ np.asarray(vector, dtype=np.float32)
            share = reach(float(similarities[list(rows)].max()))
            if share:
                out[cid] = self.values[cid] * share
        return out
