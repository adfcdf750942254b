"""`assistant tune nightly`: yesterday's ratings → a new adapter → evaluation → maybe promotion.

Runs unattended (cron, a systemd timer, or the bot's scheduler) and never makes the bot worse:
the candidate is trained from the serving adapter on the ratings since the last run, compared
with the serving adapter on the frozen golden set and on held-out recent ratings, and promoted
only if the gate says so. Every run, skipped and failed ones included, is recorded in SQL.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from bot.config import Settings
from bot.model import resolve_base_model
from bot.storage.db import Database
from bot.storage.models import TrainingRun, utcnow
from tuning.config import TuneConfig
from tuning.dataset import collect_feedback, split_rows
from tuning.evaluate import Metrics, answer_loss, golden_checks, load_golden, preference_accuracy
from tuning.gate import decide
from tuning.registry import AdapterRegistry
from tuning.report import write_report

logger = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    """Another tuning run holds the lock."""


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


@dataclass
class RunOutcome:
    run_id: int
    status: str
    version: str | None
    reasons: list[str]


def _record(db: Database, run_id: int | None, **fields) -> int:  # type: ignore[no-untyped-def]
    with db.write() as s:
        run = s.get(TrainingRun, run_id) if run_id else TrainingRun(**fields)
        if run_id:
            for key, value in fields.items():
                setattr(run, key, value)
        else:
            s.add(run)
        s.flush()
        return run.id


def _mark_interrupted(db: Database) -> None:
    """Runs still 'running' when the lock was free were killed; say so in their record."""
    with db.write() as s:
        for run in s.scalars(select(TrainingRun).where(TrainingRun.status == "running")):
            run.status = "failed"
            run.decision = {"promote": False, "reasons": ["interrupted (process killed)"]}


def last_data_until(db: Database) -> object:
    with db.read() as s:
        return s.scalar(select(TrainingRun.data_until)
                        .where(TrainingRun.kind == "nightly",
                               TrainingRun.status.in_(["promoted", "rejected"]))
                        .order_by(TrainingRun.id.desc()).limit(1))


def measure(model, tokenizer, golden: list[dict], heldout_sft: list[dict],  # type: ignore[no-untyped-def]
            heldout_kto: list[dict]) -> Metrics:
    render = lambda m: tokenizer.apply_chat_template(m, tokenize=False,  # noqa: E731
                                                     add_generation_prompt=True)
    golden_rows = [{"prompt": render(g["messages"]), "completion": g["reference"]}
                   for g in golden]
    return Metrics(golden_loss=answer_loss(model, tokenizer, golden_rows),
                   golden_pass=golden_checks(model, tokenizer, golden, render),
                   heldout_loss=answer_loss(model, tokenizer, heldout_sft) if heldout_sft else None,
                   preference_accuracy=preference_accuracy(model, tokenizer, heldout_kto))


def load_serving(base_path: Path, adapter: Path | None):  # type: ignore[no-untyped-def]
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    return (PeftModel.from_pretrained(model, str(adapter)) if adapter else model).eval()


def run_nightly(settings: Settings, cfg: TuneConfig) -> RunOutcome:
    """Build the dataset, train a candidate, evaluate, gate, promote; all recorded."""
    from tuning.train import load_for_training, train

    with tuning_lock(settings.data_dir):
        db = Database(settings.sqlalchemy_url)
        db.upgrade()
        registry = AdapterRegistry(settings.adapters_dir)
        registry.discard_stale_staging()  # left by a run that was killed; we hold the lock
        _mark_interrupted(db)
        serving = registry.current()
        run_id = _record(db, None, kind="nightly", method=cfg.method, status="running",
                         serving_version=serving, hyperparameters=cfg.to_dict())
        staging: Path | None = None
        try:
            data = collect_feedback(db, last_data_until(db), cfg.max_rows_per_user, cfg.seed)
            sizes = {"sft": len(data.sft), "kto": len(data.kto)}
            if data.size < cfg.min_rows:
                reason = (f"Skipping: only {data.size} new training rows since the last run "
                          f"(need {cfg.min_rows}).")
                logger.info(reason)
                _record(db, run_id, status="skipped", sizes=sizes, finished_at=utcnow(),
                        decision={"promote": False, "reasons": [reason]})
                return RunOutcome(run_id, "skipped", None, [reason])
            sft_train, sft_val, sft_test = split_rows(data.sft, cfg.val_fraction,
                                                      cfg.test_fraction, cfg.seed)
            _, kto_val, kto_test = split_rows(data.kto, cfg.val_fraction, cfg.test_fraction,
                                              cfg.seed)
            heldout_kto = kto_val + kto_test
            sizes.update(train=len(sft_train), val=len(sft_val), test=len(sft_test),
                         heldout_kto=len(heldout_kto))
            base_path = Path(resolve_base_model(settings.base_model, settings.models_dir))
            staging = registry.staging_dir()
            model, tokenizer = load_for_training(
                base_path, registry.path(serving) if serving else None, cfg)
            result = train(model, tokenizer, sft_train, sft_val or sft_test, cfg,
                           settings.data_dir / "tuning" / "checkpoints" / "nightly", staging)
            model.eval()
            golden = load_golden()
            candidate = measure(model, tokenizer, golden, sft_test, heldout_kto)
            current = measure(load_serving(base_path, registry.path(serving) if serving else None),
                              tokenizer, golden, sft_test, heldout_kto)
            decision = decide(candidate, current, cfg.golden_margin)
            version = registry.commit(staging, {
                "kind": "nightly", "run_id": run_id, "from": serving, "method": cfg.method,
                "dataset_hash": data.digest(), "metrics": candidate.to_dict(),
                "hyperparameters": cfg.to_dict(), "promoted": decision.promote})
            if decision.promote:
                registry.promote(version, reason=f"nightly run {run_id}")
            status = "promoted" if decision.promote else "rejected"
            metrics = {"candidate": candidate.to_dict(), "serving": current.to_dict(),
                       "train_steps": result.steps, "train_tokens": result.train_tokens,
                       "train_seconds": round(result.seconds, 1),
                       "tokens_per_s": round(result.tokens_per_s, 1),
                       "best_val_loss": result.best_val_loss}
            _record(db, run_id, status=status, candidate_version=version,
                    dataset_hash=data.digest(), data_until=data.until, sizes=sizes,
                    metrics=metrics, finished_at=utcnow(),
                    decision={"promote": decision.promote, "reasons": decision.reasons})
            write_report(settings.data_dir / "tuning" / "reports" / f"run-{run_id:04d}",
                         result.log_history, metrics, decision)
            logger.info("Nightly run %d: %s %s (%s)", run_id, status, version,
                        "; ".join(decision.reasons))
            return RunOutcome(run_id, status, version, decision.reasons)
        except BaseException as exc:
            if staging is not None and staging.exists():
                registry.discard(staging)  # the serving adapter was never touched
            _record(db, run_id, status="failed", finished_at=utcnow(),
                    decision={"promote": False, "reasons": [f"{type(exc).__name__}: {exc}"]})
            raise
        finally:
            db.dispose()


def runs(settings: Settings, limit: int = 20) -> list[dict]:
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    with db.read() as s:
        rows = s.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)).all()
        out = [{c.name: getattr(r, c.name) for c in TrainingRun.__table__.columns} for r in rows]
    db.dispose()
    return json.loads(json.dumps(out, default=str))
