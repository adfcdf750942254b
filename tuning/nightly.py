"""`assistant tune nightly`: yesterday's ratings → a new adapter → evaluation → maybe promotion.

Runs unattended (cron, a systemd timer, or the bot's scheduler) and never makes the bot worse:
the candidate is trained from the serving adapter on the ratings since the last run, compared
with the serving adapter on the frozen golden set and on held-out recent ratings, and promoted
only if the gate says so. Every run, skipped and failed ones included, is recorded in SQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.config import Settings
from bot.model import load_model, resolve_base_model
from bot.prompting import render
from bot.storage.boosts import BoostStore
from bot.storage.db import Database
from bot.storage.training import Feedback, TrainingStore
from tuning.config import TuneConfig
from tuning.dataset import collect_feedback, split_rows
from tuning.evaluate import (
    Metrics,
    answer_checks,
    answer_loss,
    golden_checks,
    load_golden,
    preference_accuracy,
    references,
    unsupported,
)
from tuning.runs import RunOutcome, tuning_run

logger = logging.getLogger(__name__)


def measure(model, tokenizer, golden: list[dict], heldout_sft: list[dict],
            heldout_kto: list[dict]) -> Metrics:
    golden_rows = [{"prompt": render(tokenizer, g["messages"]), "completion": g["reference"]}
                   for g in golden]
    heldout = heldout_sft + heldout_kto
    off_prompt = unsupported(heldout)
    answers = answer_checks(model, tokenizer, [str(r["prompt"]) for r in heldout],
                            references(heldout_sft))
    return Metrics(golden_loss=answer_loss(model, tokenizer, golden_rows),
                   golden_pass=golden_checks(model, tokenizer, golden),
                   heldout_loss=answer_loss(model, tokenizer, heldout_sft) if heldout_sft else None,
                   preference_accuracy=preference_accuracy(model, tokenizer, heldout_kto),
                   grounded=answers.grounded,
                   unsupported_loss=answer_loss(model, tokenizer, off_prompt) if off_prompt
                   else None,
                   answer_accuracy=answers.accuracy)


@contextmanager
def _knowledge_check(settings: Settings, enabled: bool) -> Iterator[Callable[[Feedback], bool] | None]:
    """Whether the knowledge base backs a correction (see `ReviewService.backed`); None when
    the screen is off."""
    if not enabled:
        yield None
        return
    from bot.wiring import build_services

    services = build_services(settings, with_chat=False, seed=False)
    try:
        yield lambda f: services.review.backed(f.question, f.prompt, f.completion)
    finally:
        services.close()


def run_nightly(settings: Settings, cfg: TuneConfig) -> RunOutcome:
    """Build the dataset, train a candidate, evaluate, gate, promote; all recorded."""
    from tuning.train import load_for_training, train

    with tuning_run(settings, cfg, "nightly") as run:
        # Retrieval learns from the same ratings every night, whether or not a model trains.
        boosts = BoostStore(run.store.db).recompute(actor="nightly")
        with _knowledge_check(settings, cfg.screen_corrections) as backed:
            data = collect_feedback(run.store, run.store.last_data_until("nightly"),
                                    cfg.max_rows_per_user, cfg.seed, backed=backed,
                                    repeated_from=cfg.repeated_from if backed else 0)
        run.store.hold(data.held)
        run.sizes = {"sft": len(data.sft), "kto": len(data.kto), "held": len(data.held),
                     "boosted_chunks": boosts["chunks"]}
        if data.size < cfg.min_rows:
            return run.skip(f"Skipping: only {data.size} new training rows since the last run "
                            f"(need {cfg.min_rows}).")
        sft_train, sft_val, sft_test = split_rows(data.sft, cfg.val_fraction, cfg.test_fraction,
                                                  cfg.seed)
        _, kto_val, kto_test = split_rows(data.kto, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        heldout_kto = kto_val + kto_test
        run.sizes.update(train=len(sft_train), val=len(sft_val), test=len(sft_test),
                         heldout_kto=len(heldout_kto))
        base_path = Path(resolve_base_model(settings.base_model, settings.models_dir))
        serving_path = run.registry.path(run.serving) if run.serving else None
        run.staging = run.registry.staging_dir()
        model, tokenizer = load_for_training(base_path, serving_path, cfg)
        result = train(model, tokenizer, sft_train, sft_val or sft_test, cfg,
                       settings.data_dir / "tuning" / "checkpoints" / "nightly", run.staging)
        model.eval()
        golden = load_golden()
        candidate = measure(model, tokenizer, golden, sft_test, heldout_kto)
        serving = measure(load_model(base_path, serving_path), tokenizer, golden, sft_test,
                          heldout_kto)
        return run.conclude("nightly", candidate, serving, result,
                            {"dataset_hash": data.digest()},
                            dataset_hash=data.digest(), data_until=data.until)


def evaluate_version(settings: Settings, version: str, cfg: TuneConfig) -> Metrics:
    """Measure one adapter version (or "base") the way the gate does: the golden set, and
    held-out splits of all the ratings in SQL."""
    from transformers import AutoTokenizer

    from tuning.registry import AdapterRegistry

    adapter = None if version == "base" else AdapterRegistry(settings.adapters_dir).path(version)
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    data = collect_feedback(TrainingStore(db), None, cfg.max_rows_per_user, cfg.seed)
    db.dispose()
    _, _, sft_test = split_rows(data.sft, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    _, kto_val, kto_test = split_rows(data.kto, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    base_path = Path(resolve_base_model(settings.base_model, settings.models_dir))
    return measure(load_model(base_path, adapter), AutoTokenizer.from_pretrained(base_path),
                   load_golden(), sft_test, kto_val + kto_test)


def runs(settings: Settings, limit: int = 20) -> list[dict]:
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    out = TrainingStore(db).recent_runs(limit)
    db.dispose()
    return json.loads(json.dumps(out, default=str))
