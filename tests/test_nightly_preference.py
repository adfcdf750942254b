"""The nightly run with the preference step on: which candidate it concludes with
(`tuning.nightly._without_failed_preference`), judged by the real gate."""

from pathlib import Path

import pytest

from tuning.config import TuneConfig
from tuning.evaluate import Metrics
from tuning.nightly import _without_failed_preference
from tuning.runs import Run

SERVING = Metrics(golden_loss=2.0, golden_pass=0.5, heldout_loss=1.5, preference_accuracy=0.9,
                  grounded=0.7, unsupported_loss=4.0)
SFT_ONLY = Metrics(golden_loss=1.8, golden_pass=0.5, heldout_loss=0.8,
                   preference_accuracy=1.0, grounded=0.8, unsupported_loss=3.9)
OVERSHOT = Metrics(golden_loss=2.1, golden_pass=0.42, heldout_loss=0.5,
                   preference_accuracy=1.0, grounded=0.9, unsupported_loss=3.9)
PLANTED = Metrics(golden_loss=1.8, golden_pass=0.5, heldout_loss=0.7,
                  preference_accuracy=1.0, grounded=0.8, unsupported_loss=2.4)


@pytest.fixture
def adapters(tmp_path: Path) -> tuple[Run, Path]:
    staging, sft_only = tmp_path / "staging", tmp_path / "sft-only"
    for path, text in ((staging, "with the preference step"), (sft_only, "SFT alone")):
        path.mkdir()
        (path / "adapter_model.safetensors").write_text(text)
    run = Run(settings=None, cfg=TuneConfig(), store=None, registry=None,  # type: ignore[arg-type]
              id=1, serving="v0001", staging=staging)
    return run, sft_only


def conclude(run: Run, sft_only: Path, candidate: Metrics,
             alone: Metrics = SFT_ONLY) -> tuple[Metrics, dict, list[str]]:
    measured: list[str] = []

    def evaluate(adapter: Path | None, stage: str) -> Metrics:
        measured.append(stage)
        assert adapter == sft_only
        return alone

    meta: dict = {"preference": {"objective": "dpo"}}
    return _without_failed_preference(run, candidate, SERVING, sft_only, meta, evaluate), \
        meta, measured


def test_a_preference_step_that_overshoots_falls_back_to_what_sft_learned(adapters) -> None:
    run, sft_only = adapters
    chosen, meta, measured = conclude(run, sft_only, OVERSHOT)
    assert chosen is SFT_ONLY and measured == ["evaluate_without_preference"]
    assert meta["preference"]["used"] is False
    assert any("golden pass rate fell" in r for r in meta["preference"]["rejected"])
    # the adapter committed is the one measured
    assert (run.staging / "adapter_model.safetensors").read_text() == "SFT alone"


def test_a_passing_preference_step_is_kept_without_a_second_evaluation(adapters) -> None:
    run, sft_only = adapters
    better = Metrics(1.7, 0.5, 0.6, 1.0, grounded=0.85, unsupported_loss=3.9)
    chosen, meta, measured = conclude(run, sft_only, better)
    assert chosen is better and measured == [] and meta["preference"]["used"] is True
    assert (run.staging / "adapter_model.safetensors").read_text() == "with the preference step"


def test_when_the_pairs_reveal_a_planted_claim_no_candidate_of_the_night_is_kept(adapters) -> None:
    """Rule 4 failed: the fall-back (which SFT alone would have promoted) is not measured."""
    run, sft_only = adapters
    chosen, meta, measured = conclude(run, sft_only, PLANTED)
    assert chosen is PLANTED and measured == [] and not run.decide(chosen, SERVING).promote
    assert (run.staging / "adapter_model.safetensors").read_text() == "with the preference step"


def test_when_both_fail_the_run_concludes_with_what_it_trained(adapters) -> None:
    run, sft_only = adapters
    chosen, meta, measured = conclude(run, sft_only, OVERSHOT, alone=OVERSHOT)
    assert chosen is OVERSHOT and measured == ["evaluate_without_preference"]
    assert meta["preference"]["used"] is True
    assert (run.staging / "adapter_model.safetensors").read_text() == "with the preference step"
