"""Counts for admins, read from SQL: usage, votes per adapter version, recent 👎 answers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import aliased

from bot.storage.db import Database
from bot.storage.models import Correction, Document, Message, Rating, User
from bot.storage.training import HELD, same_text


@dataclass(frozen=True)
class Totals:
    users: int
    questions: int
    answers: int
    documents: int
    chunks: int
    votes: list[tuple[str, int, int]]  # (adapter version or "none", 👍, 👎), by version


@dataclass(frozen=True)
class Complaint:
    """A 👎'd answer with what led to it, for fixing the knowledge base."""

    message_id: int
    question: str
    answer: str
    sources: list[str]
    downvotes: int
    corrections: list[str]
    grounding: str = ""  # verified | extractive | abstained | no_knowledge | withheld
    generated: str = ""  # what the model said, when the check replaced it
    prompt: str = ""  # what the model was given (its excerpts), to tell why it went wrong
    correction_ids: list[int] = field(default_factory=list)  # as `corrections`


@dataclass(frozen=True)
class HeldCorrection:
    """A correction the nightly screen kept out of training, waiting for an admin."""

    id: int
    question: str
    text: str
    reason: str  # unsupported | repeated
    senders: int  # accounts whose same text (`same_text`) is held too


class ReportStore:
    """Repository over one `Database` for `/stats` and `/feedback`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def totals(self) -> Totals:
        up = func.sum(case((Rating.value > 0, 1), else_=0))
        down = func.sum(case((Rating.value < 0, 1), else_=0))
        with self.db.read() as s:
            users = s.scalar(select(func.count(User.id)).where(User.forgotten_at.is_(None)))
            roles = dict(s.execute(select(Message.role, func.count()).group_by(Message.role)).all())
            votes = s.execute(select(func.coalesce(Message.adapter_version, "none"), up, down)
                              .join(Message, Message.id == Rating.message_id)
                              .group_by(Message.adapter_version)
                              .order_by(Message.adapter_version)).all()
            docs, chunks = s.execute(select(func.count(Document.id),
                                            func.coalesce(func.sum(Document.chunk_count), 0))).one()
        return Totals(users or 0, roles.get("user", 0), roles.get("assistant", 0), docs,
                      int(chunks), [(v, int(u or 0), int(d or 0)) for v, u, d in votes])

    def downvoted(self, limit: int = 5) -> list[Complaint]:
        """The most recently 👎'd answers, newest first, with their questions and corrections."""
        with self.db.read() as s:
            rows = s.execute(
                select(Message, func.count(Rating.id), func.max(Rating.updated_at))
                .join(Rating, Rating.message_id == Message.id)
                .where(Rating.value < 0)
                .group_by(Message.id)
                .order_by(func.max(Rating.updated_at).desc())
                .limit(limit)).all()
            out = []
            for answer, downvotes, _ in rows:
                question = s.scalar(select(Message.text)
                                    .where(Message.id == answer.question_id))
                corrections = s.execute(select(Correction.id, Correction.text)
                                        .where(Correction.message_id == answer.id)
                                        .order_by(Correction.id)).all()
                out.append(Complaint(answer.id, question or "", answer.text,
                                     list(answer.sources or []), downvotes,
                                     [text for _, text in corrections],
                                     answer.grounding or "",
                                     (answer.generated_text or "")
                                     if answer.grounding == "extractive" else "",
                                     answer.prompt or "", [cid for cid, _ in corrections]))
        return out

    def held(self, limit: int = 10) -> tuple[int, list[HeldCorrection]]:
        """How many corrections wait for review, and the oldest `limit` of them."""
        question = aliased(Message)
        with self.db.read() as s:
            rows = s.execute(select(Correction.id, Correction.text, Correction.review,
                                    Correction.user_id, question.text)
                             .join(Message, Message.id == Correction.message_id)
                             .outerjoin(question, question.id == Message.question_id)
                             .where(Correction.review.startswith(HELD))
                             .order_by(Correction.id)).all()
        # Accounts behind each text, counted as the screen counts them (`same_text`): a
        # repeated text is held from every account that sent it.
        senders: dict[str, set[int]] = defaultdict(set)
        for _, text, _, user_id, _ in rows:
            senders[same_text(text)].add(user_id)
        return len(rows), [HeldCorrection(cid, asked or "", text, (review or HELD)[len(HELD):],
                                          len(senders[same_text(text)]))
                           for cid, text, review, _, asked in rows[:limit]]
