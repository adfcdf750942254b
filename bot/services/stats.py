"""Numbers for admins: usage, 👍 rate overall and per adapter version, and recent 👎 to fix."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from bot.storage.reporting import ReportStore

__all__ = ["AdapterStats", "Stats", "StatsService", "rating_chart"]


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


class StatsService:
    def __init__(self, reports: ReportStore) -> None:
        self.reports = reports

    def stats(self) -> Stats:
        totals = self.reports.totals()
        per_adapter = [AdapterStats(v, up, down) for v, up, down in totals.votes]
        return Stats(users=totals.users, questions=totals.questions, answers=totals.answers,
                     up=sum(a.up for a in per_adapter), down=sum(a.down for a in per_adapter),
                     documents=totals.documents, chunks=totals.chunks, per_adapter=per_adapter)


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
