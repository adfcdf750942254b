"""Feedback boosts for retrieval: which chunks rated answers cited, and the nudges computed
from them. Recomputed nightly (`assistant tune nightly`) or by hand (`assistant kb boosts`);
`reset` removes them all. Every recompute and reset is written to the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from bot.storage.db import Database
from bot.storage.models import AuditEntry, Correction, Message, Rating, RetrievalBoost, utcnow
from knowledge.retrieval import Vote, feedback_boosts


@dataclass(frozen=True)
class Boost:
    chunk_id: str
    boost: float
    up: int
    down: int
    computed_at: datetime


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
        query = (select(Rating.user_id, Rating.value, Message.chunk_ids, latest)
                 .join(Message, Message.id == Rating.message_id)
                 .where(Message.role == "assistant"))
        with self.db.read() as s:
            return [Vote(user, 1 if value > 0 else -1, tuple(chunks or ()),
                         correction if value <= 0 else "")
                    for user, value, chunks, correction in s.execute(query)
                    if value > 0 or correction is not None]

    def recompute(self, actor: str, votes: list[Vote] | None = None) -> dict[str, int]:
        """Replace every boost with one computed from `votes` (default: today's ratings, as
        `votes()` reads them); returns a summary."""
        boosts = feedback_boosts(self.votes() if votes is None else votes)
        now = utcnow()
        summary = {"chunks": len(boosts), "raised": sum(b > 0 for b, _, _ in boosts.values()),
                   "lowered": sum(b < 0 for b, _, _ in boosts.values())}
        with self.db.write() as s:
            s.execute(delete(RetrievalBoost))
            s.add_all(RetrievalBoost(chunk_id=cid, boost=b, up=up, down=down, computed_at=now)
                      for cid, (b, up, down) in boosts.items())
            s.add(AuditEntry(actor=actor, action="boosts", details=summary))
        return summary

    def reset(self, actor: str) -> int:
        """Remove every boost (retrieval ranks by similarity alone until the next recompute)."""
        with self.db.write() as s:
            removed = s.scalar(select(func.count(RetrievalBoost.id))) or 0
            s.execute(delete(RetrievalBoost))
            s.add(AuditEntry(actor=actor, action="boosts", details={"reset": removed}))
        return removed

    def all(self) -> list[Boost]:
        with self.db.read() as s:
            rows = s.scalars(select(RetrievalBoost).order_by(RetrievalBoost.boost.desc()))
            return [Boost(r.chunk_id, r.boost, r.up, r.down, r.computed_at) for r in rows]

    def as_map(self) -> dict[str, float]:
        with self.db.read() as s:
            rows = s.execute(select(RetrievalBoost.chunk_id, RetrievalBoost.boost))
            return {chunk_id: boost for chunk_id, boost in rows}
