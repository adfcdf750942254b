"""Bookkeeping every tuning run shares: the lock, the SQL record, the verdict, the report.

`dialog.py` and `nightly.py` differ in what they train on and from; how a run is locked,
recorded, concluded (commit, gate, promote, report) and cleaned up after a failure is here.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Settings
from bot.storage.db import Database
from bot.storage.models import utcnow
from bot.storage.training import TrainingStore
from tuning.config import TuneConfig
from tuning.evaluate import Metrics
from tuning.gate import Decision, decide
from tuning.registry import AdapterRegistry
from tuning.report import write_report

logger = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    """Another tuning run holds the lock."""


@dataclass
class RunOutcome:
    run_id: int
    status: str
    version: str | None
    reasons: list[str]


@dataclass
class Run:
    """An open tuning run: its id, and where its candidate adapter is being written."""

    settings: Settings
    cfg: TuneConfig
    store: TrainingStore
    registry: AdapterRegistry
    id: int
    serving: str | None
    staging: Path | None = None
    sizes: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage
    # the process's peak memory when each stage ended: the first stage whose figure reaches the
    # run's peak is the one that set it
    peaks: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.monotonic() - started, 1)
            self.peaks[stage] = peak_rss_mb()

    def record(self, **fields) -> None:
        self.store.update_run(self.id, **fields)

    def skip(self, reason: str) -> RunOutcome:
        logger.info(reason)
        self.record(status="skipped", sizes=self.sizes, finished_at=utcnow(),
                    decision={"promote": False, "reasons": [reason]})
        return RunOutcome(self.id, "skipped", None, [reason])

    def decide(self, candidate: Metrics, serving: Metrics) -> Decision:
        """The gate's verdict on `candidate` against `serving`, with this run's margins."""
        return decide(candidate, serving, self.cfg.golden_margin, self.cfg.grounding_margin,
                      self.cfg.unsupported_margin, self.cfg.accuracy_margin)

    def conclude(self, kind: str, candidate: Metrics, serving: Metrics, result, meta: dict,
                 **record) -> RunOutcome:
        """Gate the trained candidate, commit it as a version, promote it if it passed, and
        write the run's record and report."""
        decision = self.decide(candidate, serving)
        assert self.staging is not None, "conclude() after training into staging"
        version = self.registry.commit(self.staging, {
            "kind": kind, "run_id": self.id, "from": self.serving, "method": self.cfg.method,
            "metrics": candidate.to_dict(), "hyperparameters": self.cfg.to_dict(),
            "promoted": decision.promote, **meta})
        self.staging = None
        if decision.promote:
            self.registry.promote(version, reason=f"{kind} run {self.id}")
        status = "promoted" if decision.promote else "rejected"
        metrics = {"candidate": candidate.to_dict(), "serving": serving.to_dict(),
                   "train_steps": result.steps, "train_tokens": result.train_tokens,
                   "train_seconds": round(result.seconds, 1),
                   "tokens_per_s": round(result.tokens_per_s, 1),
                   "best_val_loss": result.best_val_loss, "stage_seconds": self.seconds,
                   "peak_rss_mb": peak_rss_mb(), "stage_peak_rss_mb": self.peaks}
        self.record(status=status, candidate_version=version, sizes=self.sizes, metrics=metrics,
                    finished_at=utcnow(),
                    decision={"promote": decision.promote, "reasons": decision.reasons}, **record)
        write_report(self.settings.data_dir / "tuning" / "reports" / f"run-{self.id:04d}",
                     result.log_history, metrics, decision)
        pruned = self.registry.prune(self.cfg.keep_versions)
        if pruned:
            logger.info("Deleted old adapter versions %s (--keep-versions %d)",
                        ", ".join(pruned), self.cfg.keep_versions)
        logger.info("%s run %d: %s %s (%s)", kind, self.id, status, version,
                    "; ".join(decision.reasons))
        return RunOutcome(self.id, status, version, decision.reasons)


def release_memory() -> None:
    """Collect what the last stage left (a trainer's reference cycles) and hand the freed heap
    back to the system (glibc keeps it otherwise, and the next stage's allocations land on top
    of it)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def peak_rss_mb() -> int:
    """This process's peak resident memory so far, in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


@contextmanager
def tuning_lock(data_dir: Path) -> Iterator[None]:
    """One tuning run at a time on this data dir (released automatically if the process dies)."""
    path = data_dir / "tuning" / "tuning.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AlreadyRunning("Another tuning run is in progress; not starting a second.") from exc
        yield


@contextmanager
def tuning_run(settings: Settings, cfg: TuneConfig, kind: str) -> Iterator[Run]:
    """Lock, open a recorded run, and on any failure discard its half-written candidate and
    record why; the serving adapter is never touched until `Run.conclude` promotes."""
    with tuning_lock(settings.data_dir):
        db = Database(settings.sqlalchemy_url)
        db.upgrade()
        registry = AdapterRegistry(settings.adapters_dir)
        registry.discard_stale_staging()  # left by a run that was killed; we hold the lock
        store = TrainingStore(db)
        store.mark_interrupted()  # we hold the lock: runs still "running" were killed
        serving = registry.current()
        run_id = store.open_run(kind, cfg.method, serving, cfg.to_dict())
        run = Run(settings, cfg, store, registry, run_id, serving)
        try:
            yield run
        except BaseException as exc:
            if run.staging is not None:
                registry.discard(run.staging)
            run.record(status="failed", finished_at=utcnow(), sizes=run.sizes,
                       decision={"promote": False, "reasons": [f"{type(exc).__name__}: {exc}"]})
            raise
        finally:
            db.dispose()
