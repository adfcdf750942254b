"""Numbers for admins: usage, 👍 rate overall and per adapter version, and recent 👎 to fix."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from bot.storage.models import Correction, Document, Message, Rating, User
from bot.storage.store import Store


@dataclass(frozen=True)
class AdapterStats:
    version: str
    up: int
    down: int

    @property
    def up_rate(self) -> float:
        return self.up / (self.up + self.down) if self.up + self.down else 0.0


@dataclass(frozen=True)
class Stats:
    users: int
    questions: int
    answers: int
    up: int
    down: int
    documents: int
    chunks: int
    per_adapter: list[AdapterStats] = field(default_factory=list)

    @property
    def up_rate(self) -> float:
        return self.up / (self.up + self.down) if self.up + self.down else 0.0


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


class StatsService:
    def __init__(self, store: Store) -> None:
        self.db = store.db

    def stats(self) -> Stats:
        with self.db.read() as s:
            users = s.scalar(select(func.count(User.id)).where(User.forgotten_at.is_(None)))
            roles = dict(s.execute(select(Message.role, func.count()).group_by(Message.role)).all())
            up = func.sum(case((Rating.value > 0, 1), else_=0))
            down = func.sum(case((Rating.value < 0, 1), else_=0))
            rows = s.execute(select(func.coalesce(Message.adapter_version, "none"), up, down)
                             .join(Message, Message.id == Rating.message_id)
                             .group_by(Message.adapter_version)
                             .order_by(Message.adapter_version)).all()
            docs, chunks = s.execute(select(func.count(Document.id),
                                            func.coalesce(func.sum(Document.chunk_count), 0))).one()
        per_adapter = [AdapterStats(v, int(u or 0), int(d or 0)) for v, u, d in rows]
        return Stats(users=users or 0, questions=roles.get("user", 0),
                     answers=roles.get("assistant", 0),
                     up=sum(a.up for a in per_adapter), down=sum(a.down for a in per_adapter),
                     documents=docs, chunks=int(chunks), per_adapter=per_adapter)

    def complaints(self, limit: int = 5) -> list[Complaint]:
        """The most recently 👎'd answers, newest first."""
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
                corrections = s.scalars(select(Correction.text)
                                        .where(Correction.message_id == answer.id)).all()
                out.append(Complaint(answer.id, question or "", answer.text,
                                     list(answer.sources or []), downvotes, list(corrections),
                                     answer.grounding or "",
                                     answer.generated_text if answer.grounding == "extractive"
                                     else ""))
        return out


def rating_chart(stats: Stats) -> bytes:
    """A PNG bar chart of the 👍 rate per adapter version, with vote counts on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    versions = [a.version for a in stats.per_adapter] or ["(no ratings yet)"]
    rates = [a.up_rate * 100 for a in stats.per_adapter] or [0]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bars = ax.bar(versions, rates, color="#4a90d9")
    for bar, a in zip(bars, stats.per_adapter):
        ax.annotate(f"{a.up}/{a.up + a.down}", (bar.get_x() + bar.get_width() / 2,
                                                bar.get_height()), ha="center", va="bottom")
    ax.set_ylim(0, 105)
    ax.set_ylabel("thumbs-up rate (%)")
    ax.set_xlabel("adapter version")
    ax.set_title(f"Ratings per adapter — overall {stats.up_rate:.0%} of {stats.up + stats.down}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
