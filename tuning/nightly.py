"""`assistant tune nightly`: yesterday's ratings → a new adapter → evaluation → maybe promotion.

Runs unattended (cron, a systemd timer, or the bot's scheduler) and never makes the bot worse:
the candidate is trained from the serving adapter on the ratings since the last run, compared
with the serving adapter on the frozen golden set and on held-out recent ratings, and promoted
only if the gate says so. Every run, skipped and failed ones included, is recorded in SQL.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from bot.config import Settings
from bot.model import load_model, resolve_base_model
from bot.prompting import question_in, render
from bot.services.review import ReviewService
from bot.storage.db import Database
from bot.storage.training import Feedback, TrainingStore
from tuning.config import TuneConfig
from tuning.dataset import collect_feedback, split_rows
from tuning.evaluate import (
    LogProbs,
    Metrics,
    answer_checks,
    answer_loss,
    claim_loss,
    golden_checks,
    load_golden,
    preference_accuracy,
    references,
    sample_prompts,
    unsupported,
)
from tuning.runs import Run, RunOutcome, release_memory, tuning_run

logger = logging.getLogger(__name__)


def measure(model, tokenizer, golden: list[dict], heldout_sft: list[dict],
            heldout_kto: list[dict], eval_prompts: int = 0,
            known: Callable[[str, str], bool] | None = None) -> Metrics:
    """The gate's measures of one model. Held-out ratings are measured on at most
    `eval_prompts` of their prompts (`sample_prompts`: the same for every model, those with a
    reference answer first), each read once for its greedy answer and its rated answers'
    likelihoods alike; the answers that neither their excerpts nor, when `known` checks it,
    the knowledge base support, what poisoning plants, are always all measured."""
    golden_rows = [{"prompt": render(tokenizer, g["messages"]), "completion": g["reference"]}
                   for g in golden]
    heldout = heldout_sft + heldout_kto
    off_prompt = unsupported(heldout, known)
    refs = references(heldout_sft, off_prompt)
    prompts = sample_prompts(heldout, eval_prompts, prefer=refs)
    chosen = set(prompts)
    liked = [r for r in heldout_sft if r["prompt"] in chosen]
    rated = [r for r in heldout_kto if r["prompt"] in chosen]
    rated_answers: dict[str, list[str]] = {}
    for row in liked + rated:
        rated_answers.setdefault(str(row["prompt"]), []).append(str(row["completion"]))
    logprobs = LogProbs(model, tokenizer)
    golden_pass = golden_checks(model, tokenizer, golden, logprobs=logprobs)
    answers = answer_checks(model, tokenizer, prompts, refs, logprobs=logprobs,
                            completions=rated_answers)
    return Metrics(golden_loss=answer_loss(model, tokenizer, golden_rows, logprobs),
                   golden_pass=golden_pass,
                   heldout_loss=answer_loss(model, tokenizer, liked, logprobs) if liked
                   else None,
                   preference_accuracy=preference_accuracy(model, tokenizer, rated,
                                                           logprobs=logprobs),
                   grounded=answers.grounded,
                   unsupported_loss=claim_loss(tokenizer, off_prompt, logprobs)
                   if off_prompt else None,
                   answer_accuracy=answers.accuracy)


class KnowledgeCheck:
    """Whether the knowledge base backs an answer (`ReviewService.backed`: its facts are in
    the excerpts it came from, or in what a search for the question and the answer finds).
    The screen asks it about tonight's corrections before training; the gate about held-out
    answers after, so a day of planted corrections is caught even with the screen off."""

    def __init__(self, review: ReviewService, close: Callable[[], None] = lambda: None) -> None:
        self._review, self.close = review, close
        self.recompute_boosts = review.knowledge.recompute_boosts
        # The candidate and the serving adapter are measured on the same held-out answers:
        # each is searched for once.
        self._answers: dict[tuple[str, str], bool] = {}

    @classmethod
    def open(cls, settings: Settings) -> KnowledgeCheck:
        from bot.wiring import build_services

        services = build_services(settings, with_chat=False, seed=False)
        return cls(services.review, services.close)

    def correction(self, f: Feedback) -> bool:
        return self._review.backed(f.question, f.prompt, f.completion)

    def answer(self, prompt: str, answer: str) -> bool:
        key = (prompt, answer)
        if key not in self._answers:
            self._answers[key] = self._review.backed(question_in(prompt), prompt, answer)
        return self._answers[key]


def run_nightly(settings: Settings, cfg: TuneConfig) -> RunOutcome:
    """Build the dataset, train a candidate, evaluate, gate, promote; all recorded."""
    from tuning.preference import train_preference
    from tuning.train import as_served, load_for_training, train

    with tuning_run(settings, cfg, "nightly") as run, \
            closing(KnowledgeCheck.open(settings)) as knowledge:
        # Retrieval learns from the same ratings every night, whether or not a model trains.
        boosts = knowledge.recompute_boosts("nightly")
        with run.timed("data"):
            screen = cfg.screen_corrections
            data = collect_feedback(run.store, run.store.last_data_until("nightly"),
                                    cfg.max_rows_per_user, cfg.seed,
                                    backed=knowledge.correction if screen else None,
                                    repeated_from=cfg.repeated_from if screen else 0)
        run.store.hold(data.held)
        run.sizes = {"sft": len(data.sft), "kto": len(data.kto), "held": len(data.held),
                     "boosted_chunks": boosts["chunks"]}
        if data.size < cfg.min_rows:
            return run.skip(f"Skipping: only {data.size} new training rows since the last run "
                            f"(need {cfg.min_rows}).")
        sft_train, sft_val, sft_test = split_rows(data.sft, cfg.val_fraction, cfg.test_fraction,
                                                  cfg.seed)
        kto_train, kto_val, kto_test = split_rows(data.kto, cfg.val_fraction,
                                                  cfg.test_fraction, cfg.seed)
        heldout_kto = kto_val + kto_test
        run.sizes.update(train=len(sft_train), val=len(sft_val), test=len(sft_test),
                         heldout_kto=len(heldout_kto))
        base_path = Path(resolve_base_model(settings.base_model, settings.models_dir))
        serving_path = run.registry.path(run.serving) if run.serving else None
        run.staging = run.registry.staging_dir()
        with run.timed("train"):
            model, tokenizer = load_for_training(base_path, serving_path, cfg)
            result = train(model, tokenizer, sft_train, sft_val or sft_test, cfg,
                           settings.data_dir / "tuning" / "checkpoints" / "nightly", run.staging)
        meta: dict = {"dataset_hash": data.digest()}
        with run.timed("preference"):
            preferred = train_preference(model, tokenizer, kto_train, cfg,
                                         settings.data_dir / "tuning" / "checkpoints" / "pref")
        sft_only = None  # the adapter as SFT left it, while the preference step's is judged
        if preferred is not None:
            sft_only = run.registry.staging_dir()  # an interrupted run's copy is discarded too
            shutil.copytree(run.staging, sft_only, dirs_exist_ok=True)
            model.save_pretrained(str(run.staging))
            meta["preference"] = preferred.summary()
            run.sizes["preference"] = preferred.examples
        del model  # the training copy: see as_served
        golden = load_golden()

        def evaluate(adapter: Path | None, stage: str) -> Metrics:
            model = as_served(base_path, adapter)  # on the float32 base, merged, as it serves
            with run.timed(stage):
                metrics = measure(model, tokenizer, golden, sft_test, heldout_kto,
                                  cfg.eval_prompts, knowledge.answer)
            del model  # one model in memory at a time
            release_memory()
            return metrics

        try:
            candidate = evaluate(run.staging, "evaluate_candidate")
            serving = evaluate(serving_path, "evaluate_serving")
            if sft_only is not None:
                candidate = _without_failed_preference(run, candidate, serving, sft_only,
                                                       meta, evaluate)
        finally:
            if sft_only is not None:
                shutil.rmtree(sft_only, ignore_errors=True)
        return run.conclude("nightly", candidate, serving, result, meta,
                            dataset_hash=data.digest(), data_until=data.until)


def _without_failed_preference(run: Run, candidate: Metrics, serving: Metrics, sft_only: Path,
                               meta: dict,
                               evaluate: Callable[[Path | None, str], Metrics]) -> Metrics:
    """The candidate to conclude with when the preference step ran: its own if the gate passes
    it; otherwise the adapter as SFT left it, measured and gated in turn, so that a preference
    step that overshoots (a golden check lost to a few pairs) never costs the night what SFT
    learned. Not when the gate found that the preference step's adapter learned what neither
    the excerpts nor the knowledge base hold (rule 4): the pairs have then shown that the
    night's ratings plant content, and every candidate trained on them is rejected."""
    decision = run.decide(candidate, serving)
    if decision.promote or decision.learned_unsupported:
        meta["preference"]["used"] = True
        return candidate
    logger.info("The candidate with the preference step failed the gate (%s); measuring the "
                "adapter without it", "; ".join(decision.reasons))
    alone = evaluate(sft_only, "evaluate_without_preference")
    meta["preference"]["rejected"] = decision.reasons
    if not run.decide(alone, serving).promote:
        meta["preference"]["used"] = True  # both fail: the run concludes with what it trained
        return candidate
    meta["preference"]["used"] = False
    assert run.staging is not None
    shutil.rmtree(run.staging)
    sft_only.rename(run.staging)  # both in the registry's directory
    return alone


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
    with closing(KnowledgeCheck.open(settings)) as knowledge:
        return measure(load_model(base_path, adapter), AutoTokenizer.from_pretrained(base_path),
                       load_golden(), sft_test, kto_val + kto_test, cfg.eval_prompts,
                       knowledge.answer)


def runs(settings: Settings, limit: int = 20) -> list[dict]:
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    out = TrainingStore(db).recent_runs(limit)
    db.dispose()
    return json.loads(json.dumps(out, default=str))
