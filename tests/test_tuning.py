"""The learning loop on the real packaged model: LoRA training, nightly run, gate, registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from bot.config import DEFAULT_SYSTEM_PROMPT, Settings
from bot.model import resolve_base_model
from bot.prompting import build_messages, render
from bot.storage.db import Database
from bot.storage.models import Rating, TrainingRun
from bot.storage.store import Store, UserInfo
from knowledge.index import Hit
from tests.conftest import MODEL_CACHE, use_backend
from tuning.config import TuneConfig
from tuning.registry import AdapterRegistry

pytestmark = pytest.mark.slow

FACTS = [("Opening hours", "The shop opens at nine and closes at six.", "When does the shop open?",
          "The shop opens at nine (Source: Opening hours)."),
         ("Refunds", "Refunds take fourteen days.", "How long do refunds take?",
          "Refunds take fourteen days (Source: Refunds)."),
         ("Parking", "Parking is free on level B2.", "Where can I park?",
          "Park for free on level B2 (Source: Parking)."),
         ("Support", "Email help@example.com for support.", "How do I get support?",
          "Email help@example.com (Source: Support).")]


def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base_model("", MODEL_CACHE))


def seed_ratings(store: Store, n_users: int = 6) -> None:
    """Users who like short cited answers and dislike rambling ones, as stored by the bot."""
    tok = tokenizer()
    for u in range(n_users):
        user = UserInfo(100 + u)
        store.upsert_user(user)
        for title, text, question, good in FACTS:
            prompt = render(tok, build_messages(DEFAULT_SYSTEM_PROMPT, [], f"{question} ({u})",
                                                [Hit("1", 1, 1, title, text, 0.9)]))
            conv = store.active_conversation(user.id)
            for answer, vote in ((good, 1), (f"Well, it depends on many things. {text} Maybe.", -1)):
                store.add_message(conv, "user", question, user_id=user.id)
                mid = store.add_message(conv, "assistant", answer, prompt=prompt)
                store.rate(mid, user.id, vote)


def tiny(**overrides) -> TuneConfig:  # type: ignore[no-untyped-def]
    return TuneConfig(**{"max_steps": 4, "batch_size": 4, "grad_accum": 1, "max_length": 384,
                         "eval_every": 2, "min_rows": 8, "patience": 2, "learning_rate": 1e-3,
                         **overrides})


def test_lora_training_changes_adapter_weights_not_base_weights(tmp_path: Path) -> None:
    from tuning.train import load_for_training, train

    base_path = Path(resolve_base_model("", MODEL_CACHE))
    model, tok = load_for_training(base_path, None, tiny())
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()
                   if "lora_" not in n and "q_proj.base_layer.weight" in n}
    rows = [{"prompt": f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
             "completion": good} for _, _, q, good in FACTS] * 4
    train(model, tok, rows, rows[:4], tiny(), tmp_path / "ckpt", tmp_path / "out")
    after = dict(model.named_parameters())
    assert any(not torch.equal(lora_before[n], after[n]) for n in lora_before)
    assert all(torch.equal(base_before[n], after[n]) for n in base_before)
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_bfloat16_training_on_cpu_keeps_the_adapter_in_float32(tmp_path: Path) -> None:
    """`--bf16 on` on a CPU: the frozen base in bfloat16, the adapter trained in float32, the
    losses those of float32 training to a bfloat16 rounding."""
    from tuning.train import load_for_training, train

    base_path = Path(resolve_base_model("", MODEL_CACHE))
    rows = [{"prompt": f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
             "completion": good} for _, _, q, good in FACTS] * 2
    losses = {}
    for bf16 in ("on", "off"):
        cfg = tiny(bf16=bf16, max_steps=2)
        model, tok = load_for_training(base_path, None, cfg)
        dtypes = {(("lora_" in n), p.dtype) for n, p in model.named_parameters()}
        if bf16 == "on":
            assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
        else:
            assert dtypes == {(True, torch.float32), (False, torch.float32)}
        out = tmp_path / f"out-{bf16}"
        result = train(model, tok, rows, [], cfg, tmp_path / f"ckpt-{bf16}", out)
        losses[bf16] = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses["on"] == pytest.approx(losses["off"], abs=0.05)
    assert losses["on"] != losses["off"]  # it did compute in bfloat16


@pytest.mark.e2e
def test_nightly_run_trains_evaluates_and_records_a_decision(tmp_path: Path, monkeypatch,
                                                             backend) -> None:
    from tuning.nightly import run_nightly

    monkeypatch.chdir(tmp_path)
    use_backend(monkeypatch, backend)
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=MODEL_CACHE)
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    seed_ratings(Store(db))
    # Two corrections of 👎 answers: one its excerpts back, one nothing backs (held for review).
    with db.read() as s:
        downvoted = s.scalars(select(Rating.message_id).where(Rating.value < 0)
                              .order_by(Rating.id)).all()
    Store(db).add_correction(downvoted[1], 100, "Refunds take fourteen days.")  # about refunds
    Store(db).add_correction(downvoted[5], 101, "Refunds take one hour at the kiosk.")
    outcome = run_nightly(settings, tiny(preference="dpo", preference_learning_rate=1e-3))
    assert outcome.status in ("promoted", "rejected") and outcome.version == "v0001"
    registry = AdapterRegistry(settings.adapters_dir)
    assert registry.current() == ("v0001" if outcome.status == "promoted" else None)
    with db.read() as s:
        run = s.scalar(select(TrainingRun))
    assert run.status == outcome.status and run.dataset_hash and run.data_until
    assert run.sizes["sft"] == 25 and run.sizes["kto"] == 49 and run.sizes["held"] == 1
    assert [found[2] for found in map(Store(db).correction, (1, 2)) if found] == [
        None, "held:unsupported"]
    assert run.hyperparameters["max_steps"] == 4
    assert set(run.metrics["candidate"]) == {"golden_loss", "golden_pass", "heldout_loss",
                                             "preference_accuracy", "grounded",
                                             "unsupported_loss", "answer_accuracy"}
    assert 0.0 <= run.metrics["candidate"]["answer_accuracy"] <= 1.0  # references were held out
    assert 0.0 <= run.metrics["candidate"]["grounded"] <= 1.0
    stages = {"data", "train", "preference", "evaluate_candidate", "evaluate_serving"}
    # The preference step trained on pairs of tonight's training split (a liked and a
    # disliked answer to one prompt) and is recorded with the adapter; when the gate failed
    # its candidate, the adapter as SFT left it was measured too.
    preference = registry.meta("v0001")["preference"]
    assert preference["objective"] == "dpo" and preference["steps"] > 0
    fell_back = "evaluate_without_preference" in run.metrics["stage_seconds"]
    assert set(run.metrics["stage_seconds"]) == stages | (
        {"evaluate_without_preference"} if fell_back else set())
    assert ("rejected" in preference) == fell_back and isinstance(preference["used"], bool)
    assert 0 < run.sizes["preference"] == preference["examples"] <= 49 // 2
    assert not (registry.path("v0001") / "ref").exists()  # TRL's reference copy not saved
    assert run.metrics["stage_seconds"]["train"] > 0 and run.metrics["peak_rss_mb"] > 100
    peaks = run.metrics["stage_peak_rss_mb"]
    assert set(peaks) == set(run.metrics["stage_seconds"])
    assert peaks["data"] <= peaks["train"] <= run.metrics["peak_rss_mb"]
    assert run.decision["reasons"]
    report = settings.data_dir / "tuning" / "reports" / f"run-{run.id:04d}"
    assert (report / "loss.png").stat().st_size > 1000
    assert (report / "decision.txt").read_text().split("\n")[0] in ("PROMOTED", "REJECTED")

    again = run_nightly(settings, tiny())  # nothing new since the last run
    assert again.status == "skipped" and "only 0 new training rows" in again.reasons[0]
    assert registry.versions() == ["v0001"]
    db.dispose()


def test_kill_mid_training_then_resume(tmp_path: Path) -> None:
    """SIGKILL during training leaves the serving adapter alone; --resume finishes the run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "data"
    settings = Settings(data_dir=data, model_cache_dir=MODEL_CACHE, _env_file=None)
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    seed_ratings(Store(db))
    registry = AdapterRegistry(settings.adapters_dir)
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data), "MODEL_CACHE_DIR": str(MODEL_CACHE)}
    env.pop("DATABASE_URL", None)
    cmd = [sys.executable, "-m", "bot.cli", "tune", "nightly", "--max-steps", "8",
           "--eval-every", "2", "--batch-size", "4", "--grad-accum", "1", "--max-length", "384",
           "--min-rows", "8", "--patience", "10", "--learning-rate", "1e-3"]
    checkpoints = data / "tuning" / "checkpoints" / "nightly"
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint's files land
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert registry.versions() == [] and registry.current() is None  # serving untouched

    done = subprocess.run([*cmd, "--resume"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming from" in done.stderr and "checkpoint-" in done.stderr
    assert "the start" not in done.stderr.split("Resuming from", 1)[1][:40]
    assert registry.versions() == ["v0001"]
    assert not list(settings.adapters_dir.glob(".staging-*"))
    with db.read() as s:
        statuses = s.scalars(select(TrainingRun.status).order_by(TrainingRun.id)).all()
    assert statuses[0] == "failed" and statuses[1] in ("promoted", "rejected")
    db.dispose()


def test_rollback_from_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("", MODEL_CACHE))
    for _ in range(3):
        staging = registry.staging_dir()
        get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(staging)
        registry.commit(staging, {"kind": "test"})
    assert main(["tune", "promote", "v0001"]) == 0
    assert main(["tune", "promote", "v0002"]) == 0
    assert main(["tune", "rollback"]) == 0
    assert "now serving v0001" in capsys.readouterr().out
    assert registry.current() == "v0001"
    assert main(["tune", "list"]) == 0
    assert "* v0001" in capsys.readouterr().out
    assert main(["tune", "promote", "v0042"]) == 1
    capsys.readouterr()
    assert main(["tune", "eval", "v0001"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["version"] == "v0001" and 0 <= measured["golden_pass"] <= 1
    assert measured["golden_loss"] > 0 and measured["heldout_loss"] is None  # no ratings yet
    assert main(["tune", "eval", "v0099"]) == 1
    capsys.readouterr()
    # v0001 serves (and was served last), v0003 is the newest: v0002 goes.
    assert main(["tune", "prune", "--keep", "1"]) == 0
    assert "Deleted v0002." in capsys.readouterr().out
    assert registry.versions() == ["v0001", "v0003"] and registry.current() == "v0001"


def test_dialog_tuning_trains_from_the_knowledge_base_and_records_the_comparison(
        tmp_path: Path, monkeypatch) -> None:
    from bot.wiring import build_services
    from tuning.dialog import run_dialog

    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=MODEL_CACHE)
    build_services(settings, with_chat=False, seed=True).close()  # the sample documents
    outcome = run_dialog(settings, tiny(max_steps=3))
    assert outcome.status in ("promoted", "rejected") and outcome.version == "v0001"
    db = Database(settings.sqlalchemy_url)
    with db.read() as s:
        run = s.scalar(select(TrainingRun))
    assert run.kind == "dialog" and run.sizes["dialogs"] > 10 and run.sizes["test"] > 0
    assert run.metrics["candidate"]["heldout_loss"] and run.metrics["serving"]["heldout_loss"]
    db.dispose()


def test_prompt_tuning_runs_through_the_same_pipeline_and_is_served(
        tmp_path: Path, monkeypatch) -> None:
    from bot.model import HFChatModel
    from tuning.nightly import run_nightly

    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=MODEL_CACHE)
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    seed_ratings(Store(db), n_users=3)
    outcome = run_nightly(settings, tiny(method="prompt-tuning", learning_rate=3e-2))
    registry = AdapterRegistry(settings.adapters_dir)
    assert registry.meta(outcome.version)["method"] == "prompt-tuning"
    registry.promote(outcome.version, reason="test")
    served = HFChatModel("", MODEL_CACHE, settings.adapters_dir, max_new_tokens=8)
    gen = served.generate([{"role": "user", "content": "Hello"}])
    assert gen.adapter_version == outcome.version and gen.text
    # Its virtual tokens are not weights the decoder could hold: the PEFT model answers.
    assert served._flight is None and hasattr(served.model, "peft_config")
    db.dispose()
