"""The preference step: which rated answers become DPO pairs and KTO rows, and a real TRL run
on the packaged model that moves the adapter toward the preferred answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.model import resolve_base_model
from tests.conftest import MODEL_CACHE
from tuning.config import TuneConfig
from tuning.preference import examples_for, preference_pairs, preference_rows, train_preference

P1 = "<|im_start|>user\nWhen does the shop open? Excerpt: The shop opens at nine.<|im_end|>\n" \
     "<|im_start|>assistant\n"
P2 = "<|im_start|>user\nHow long do refunds take? Excerpt: Refunds take fourteen days." \
     "<|im_end|>\n<|im_start|>assistant\n"


def rated(prompt: str, answer: str, label: bool) -> dict:
    return {"prompt": prompt, "completion": answer, "label": label}


def test_pairs_join_preferred_and_rejected_answers_of_one_prompt() -> None:
    rows = [rated(P1, "At nine.", True), rated(P1, "At ten.", False),
            rated(P1, "It opens at noon.", False),
            rated(P2, "Fourteen days.", True)]  # nothing rejected for P2: no pair
    assert sorted((p["chosen"], p["rejected"]) for p in preference_pairs(rows)) == [
        ("At nine.", "At ten."), ("At nine.", "It opens at noon.")]
    assert all(p["prompt"] == P1 for p in preference_pairs(rows))


def test_an_answer_counts_by_its_net_votes() -> None:
    """Two 👍 and one adversarial 👎 leave an answer preferred; a tie says nothing."""
    rows = [rated(P1, "At nine.", True), rated(P1, "at  nine.", True), rated(P1, "At nine.", False),
            rated(P1, "At ten.", False),
            rated(P2, "Fourteen days.", True), rated(P2, "Fourteen days.", False)]
    assert [(p["chosen"], p["rejected"]) for p in preference_pairs(rows)] == [
        ("At nine.", "At ten.")]
    assert sorted((r["completion"], r["label"]) for r in preference_rows(rows)) == [
        ("At nine.", True), ("At ten.", False)]


def test_kto_needs_both_kinds_and_examples_are_capped() -> None:
    liked = [rated(f"{P1} {i}", "At nine.", True) for i in range(5)]
    assert examples_for("kto", liked, 0, 1) == []
    rows = liked + [rated(f"{P1} {i}", "At ten.", False) for i in range(5)]
    assert len(examples_for("kto", rows, 0, 1)) == 10
    capped = examples_for("dpo", rows, 3, 1)
    assert len(capped) == 3 and capped == examples_for("dpo", rows, 3, 1)  # seeded


def test_off_or_nothing_to_learn_trains_nothing() -> None:
    rows = [rated(P1, "At nine.", True)]
    assert train_preference(None, None, rows, TuneConfig(preference="off"), Path("/nowhere")) \
        is None
    assert train_preference(None, None, rows, TuneConfig(preference="dpo"), Path("/nowhere")) \
        is None  # no rejected answer, no pair


def margin(model, tokenizer, prompt: str, chosen: str, rejected: str) -> float:
    """log p(chosen) - log p(rejected) given the prompt, summed over the answer tokens."""
    def logp(answer: str) -> float:
        ids = tokenizer(prompt + answer, return_tensors="pt", add_special_tokens=False).input_ids
        start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, start - 1:-1]
        return float(logits.log_softmax(-1).gather(-1, ids[0, start:, None]).sum())
    return logp(chosen) - logp(rejected)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_a_real_preference_run_prefers_what_users_preferred(tmp_path: Path,
                                                            objective: str) -> None:
    from tuning.train import load_for_training

    cfg = TuneConfig(preference=objective, preference_learning_rate=5e-3, preference_epochs=4,
                     batch_size=4, max_length=256, train_layers=3)
    model, tokenizer = load_for_training(Path(resolve_base_model("", MODEL_CACHE)), None, cfg)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    good, bad = "The shop opens at nine.", "The shop opens at ten."
    rows = [r for i in range(4) for r in (rated(f"{P1}{'.' * i}", good, True),
                                          rated(f"{P1}{'.' * i}", bad, False))]
    layers = model.config.num_hidden_layers
    lora = lambda: {n: p.detach().clone() for n, p in model.named_parameters()  # noqa: E731
                    if "lora_B" in n}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    before, margin_before = lora(), margin(model, tokenizer, P1, good, bad)

    result = train_preference(model, tokenizer, rows, cfg, tmp_path / "ckpt")

    assert result is not None and result.objective == objective and result.steps > 0
    assert result.examples == (4 if objective == "dpo" else 8)
    assert margin(model, tokenizer, P1, good, bad) > margin_before + 0.5
    after = lora()
    changed = {int(n.split(".layers.")[1].split(".")[0]) for n in after
               if not torch.equal(after[n], before[n])}
    assert changed == set(range(layers - 3, layers))  # the top layers only, as SFT
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert list(model.peft_config) == ["default"]  # TRL's reference copy is gone
    assert result.summary()["last"]["loss"] < result.summary()["first"]["loss"]


@pytest.mark.slow
def test_an_sft_weight_adds_the_chosen_answers_likelihood_to_the_dpo_loss(tmp_path: Path) -> None:
    """`--preference-sft-weight`: the loss is DPO's plus the chosen answers' token loss, so the
    first step's loss (policy = reference: DPO alone is log 2 there) carries it, and the chosen
    answer becomes more likely, not only more likely than the rejected one."""
    import math

    from tuning.train import load_for_training

    good, bad = "The shop opens at nine.", "The shop opens at ten."
    rows = [r for i in range(2) for r in (rated(f"{P1}{'.' * i}", good, True),
                                          rated(f"{P1}{'.' * i}", bad, False))]
    first = {}
    for weight in (0.0, 1.0):
        cfg = TuneConfig(preference="dpo", preference_learning_rate=5e-3, preference_epochs=2,
                         preference_sft_weight=weight, batch_size=2, max_length=256,
                         train_layers=3)
        model, tokenizer = load_for_training(Path(resolve_base_model("", MODEL_CACHE)), None,
                                             cfg)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        chosen_before = margin(model, tokenizer, P1, good, "")
        result = train_preference(model, tokenizer, rows, cfg, tmp_path / f"ckpt-{weight}")
        assert result is not None
        first[weight] = result.summary()["first"]["loss"]
        if weight:
            assert margin(model, tokenizer, P1, good, "") > chosen_before
    assert first[0.0] == pytest.approx(math.log(2), abs=0.01)
    assert first[1.0] > math.log(2) + 0.3
