"""What tuning reads and writes in SQL: rated answers to learn from, and the runs' records.

`tuning/` never queries the ORM itself; it asks this repository, as the bot asks `Store`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import aliased

from bot.storage.db import Database
from bot.storage.models import Correction, Message, Rating, TrainingRun, User, utcnow

# Correction.review: held back by the nightly screen (HELD + the reason), or an admin's decision.
HELD, APPROVED, REJECTED = "held:", "approved", "rejected"


def same_text(text: str) -> str:
    """What makes two corrections "the same text": case, spacing and Unicode forms aside."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class Feedback:
    """One user's judgement of an answer: a vote (+1/-1), or a correction (`value` 0, the
    corrected text in `completion`), with the prompt the answer was generated from."""

    prompt: str
    completion: str
    value: int
    user_id: int
    at: datetime
    correction_id: int | None = None
    question: str = ""  # the question answered (corrections only)


class TrainingStore:
    """Repository over one `Database` for the learning loop."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def feedback(self, since: datetime | None) -> list[Feedback]:
        """Votes and corrections newer than `since` on answers that kept their prompt, from
        users who have not asked to be forgotten; votes first, then corrections. Corrections
        held for review or rejected are left out; one an admin approved counts as new from the
        moment of approval."""
        rater, question = aliased(User), aliased(Message)
        votes = (select(Message.prompt, Message.text, Rating.value, Rating.user_id,
                        Rating.updated_at)
                 .join(Rating, Rating.message_id == Message.id)
                 .join(rater, rater.id == Rating.user_id)
                 .where(Message.prompt.is_not(None), rater.forgotten_at.is_(None)))
        fixes = (select(Message.prompt, Correction.text, Correction.user_id, Correction.created_at,
                        Correction.id, question.text, Correction.reviewed_at)
                 .join(Correction, Correction.message_id == Message.id)
                 .join(rater, rater.id == Correction.user_id)
                 .outerjoin(question, question.id == Message.question_id)
                 .where(Message.prompt.is_not(None), rater.forgotten_at.is_(None),
                        or_(Correction.review.is_(None), Correction.review == APPROVED)))
        if since is not None:
            votes = votes.where(Rating.updated_at > since)
            fixes = fixes.where(or_(Correction.created_at > since, Correction.reviewed_at > since))
        with self.db.read() as s:
            out = [Feedback(str(p), a, v, u, at) for p, a, v, u, at in s.execute(votes)]
            out += [Feedback(str(p), text, 0, u, max(at, reviewed or at), cid, q or "")
                    for p, text, u, at, cid, q, reviewed in s.execute(fixes)]
        return out

    def hold(self, reasons: dict[int, str]) -> None:
        """Keep these corrections out of training until an admin decides ({id: reason})."""
        with self.db.write() as s:
            for cid, reason in reasons.items():
                s.execute(update(Correction).where(Correction.id == cid, Correction.review.is_(None))
                          .values(review=HELD + reason, reviewed_at=utcnow()))

    def forgotten_prompts(self) -> set[str]:
        """Prompts of answers to questions from forgotten users: they never train (the answer
        names its question; `Store.forget_user` deletes both, this covers rows kept for other
        reasons)."""
        question, asker = aliased(Message), aliased(User)
        with self.db.read() as s:
            return set(s.scalars(
                select(Message.prompt).join(question, question.id == Message.question_id)
                .join(asker, asker.id == question.user_id)
                .where(asker.forgotten_at.is_not(None), Message.prompt.is_not(None))))

    def open_run(self, kind: str, method: str, serving: str | None,
                 hyperparameters: dict[str, Any]) -> int:
        """Record a run as started; its id."""
        with self.db.write() as s:
            row = TrainingRun(kind=kind, method=method, status="running",
                              serving_version=serving, hyperparameters=hyperparameters)
            s.add(row)
            s.flush()
            return row.id

    def update_run(self, run_id: int, **fields: Any) -> None:
        with self.db.write() as s:
            run = s.get(TrainingRun, run_id)
            for key, value in fields.items():
                setattr(run, key, value)

    def mark_interrupted(self) -> int:
        """Runs still 'running' while no run holds the lock were killed: say so. How many."""
        with self.db.write() as s:
            runs = s.scalars(select(TrainingRun).where(TrainingRun.status == "running")).all()
            for run in runs:
                run.status = "failed"
                run.decision = {"promote": False, "reasons": ["interrupted (process killed)"]}
            return len(runs)

    def last_data_until(self, kind: str = "nightly") -> datetime | None:
        """The newest feedback a finished run of `kind` trained on."""
        with self.db.read() as s:
            return s.scalar(select(TrainingRun.data_until)
                            .where(TrainingRun.kind == kind,
                                   TrainingRun.status.in_(["promoted", "rejected"]))
                            .order_by(TrainingRun.id.desc()).limit(1))

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, each as a dict of its columns."""
        with self.db.read() as s:
            rows = s.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit))
            return [{c.name: getattr(r, c.name) for c in TrainingRun.__table__.columns}
                    for r in rows]
