"""Feedback boosts for retrieval: which chunks rated answers cited, and the nudges computed
from them. Recomputed nightly (`assistant tune nightly`) or by hand (`assistant kb boosts`);
`reset` removes them all. Every recompute and reset is written to the audit log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import aliased

from bot.storage.db import Database
from bot.storage.models import (
    AuditEntry,
    BoostQuestion,
    Correction,
    Message,
    Rating,
    RetrievalBoost,
    utcnow,
)
from knowledge.retrieval import FeedbackBoosts, Vote, boost_questions, feedback_boosts


@dataclass(frozen=True)
class Boost:
    chunk_id: str
    boost: float
    up: int
    down: int
    computed_at: datetime
    questions: tuple[str, ...] = ()  # the rated questions it applies to; () every question


class BoostStore:
    """Repository over one `Database` for retrieval boosts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def votes(self) -> list[Vote]:
        """👍 on answers that cited chunks, and 👎 that came with a correction (its text: the
        user's latest correction of that answer)."""
        latest = (select(Correction.text).where(Correction.message_id == Rating.message_id,
                                                Correction.user_id == Rating.user_id)
                  .order_by(Correction.id.desc()).limit(1).scalar_subquery())
        question = aliased(Message)
        query = (select(Rating.user_id, Rating.value, Message.chunk_ids, latest, question.text)
                 .join(Message, Message.id == Rating.message_id)
                 .outerjoin(question, question.id == Message.question_id)
                 .where(Message.role == "assistant"))
        with self.db.read() as s:
            return [Vote(user, 1 if value > 0 else -1, tuple(chunks or ()),
                         correction if value <= 0 else "", asked or "")
                    for user, value, chunks, correction, asked in s.execute(query)
                    if value > 0 or correction is not None]

    def recompute(self, actor: str, votes: list[Vote] | None = None,
                  embed: Callable[[list[str]], list[list[float]]] | None = None
                  ) -> dict[str, int]:
        """Replace every boost with one computed from `votes` (default: today's ratings, as
        `votes()` reads them), each for the rated questions behind it, embedded by `embed`
        (without it, every boost applies to every question); returns a summary."""
        import numpy as np

        votes = self.votes() if votes is None else votes
        boosts = feedback_boosts(votes)
        asked = {cid: qs for cid, qs in boost_questions(votes).items() if cid in boosts} \
            if embed is not None else {}
        distinct = sorted({q for qs in asked.values() for q in qs})
        vectors = embed(distinct) if embed is not None and distinct else []
        now = utcnow()
        summary = {"chunks": len(boosts), "raised": sum(b > 0 for b, _, _ in boosts.values()),
                   "lowered": sum(b < 0 for b, _, _ in boosts.values())}
        with self.db.write() as s:
            s.execute(delete(RetrievalBoost))
            s.execute(delete(BoostQuestion))
            stored = [BoostQuestion(text=q, vector=np.asarray(v, dtype=np.float16).tobytes())
                      for q, v in zip(distinct, vectors, strict=True)]
            s.add_all(stored)
            s.flush()  # their ids
            ids = {q.text: q.id for q in stored}
            s.add_all(RetrievalBoost(chunk_id=cid, boost=b, up=up, down=down, computed_at=now,
                                     questions=[ids[q] for q in asked[cid]]
                                     if asked.get(cid) else None)
                      for cid, (b, up, down) in boosts.items())
            s.add(AuditEntry(actor=actor, action="boosts", details=summary))
        return summary

    def reset(self, actor: str) -> int:
        """Remove every boost (retrieval ranks by similarity alone until the next recompute)."""
        with self.db.write() as s:
            removed = s.scalar(select(func.count(RetrievalBoost.id))) or 0
            s.execute(delete(RetrievalBoost))
            s.execute(delete(BoostQuestion))
            s.add(AuditEntry(actor=actor, action="boosts", details={"reset": removed}))
        return removed

    def all(self) -> list[Boost]:
        with self.db.read() as s:
            texts = {qid: text for qid, text in
                     s.execute(select(BoostQuestion.id, BoostQuestion.text))}
            rows = s.scalars(select(RetrievalBoost).order_by(RetrievalBoost.boost.desc()))
            return [Boost(r.chunk_id, r.boost, r.up, r.down, r.computed_at,
                          tuple(texts[q] for q in r.questions or () if q in texts))
                    for r in rows]

    def feedback(self) -> FeedbackBoosts:
        """Every boost with the vectors of the questions it is for, for searching."""
        import numpy as np

        with self.db.read() as s:
            questions = s.execute(select(BoostQuestion.id, BoostQuestion.vector)
                                  .order_by(BoostQuestion.id)).all()
            rows = s.execute(select(RetrievalBoost.chunk_id, RetrievalBoost.boost,
                                    RetrievalBoost.questions)).all()
        row_of = {qid: i for i, (qid, _) in enumerate(questions)}
        vectors = np.frombuffer(b"".join(v for _, v in questions), dtype=np.float16) \
            .reshape(len(questions), -1).astype(np.float32) if questions else None
        return FeedbackBoosts(
            values={cid: boost for cid, boost, _ in rows},
            questions={cid: [row_of[q] for q in asked if q in row_of]
                       for cid, _, asked in rows if asked},
            vectors=vectors)

    def signature(self) -> tuple[int, datetime | None]:
        """What changes whenever the boosts do (a recompute or a reset): their number and
        when they were last computed."""
        with self.db.read() as s:
            count, newest = s.execute(select(func.count(RetrievalBoost.id),
                                             func.max(RetrievalBoost.computed_at))).one()
            return int(count or 0), newest
