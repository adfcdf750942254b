"""Preference accuracy compares a 👍 answer with a 👎 answer to the same prompt when it can;
the gate's held-out sample is the same for every model and puts such prompts first."""

from __future__ import annotations

import pytest

import tuning.evaluate as evaluate


@pytest.fixture
def scores(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The model's mean log-prob of each completion, whatever the prompt."""
    table: dict[str, float] = {}
    monkeypatch.setattr(evaluate.LogProbs, "_compute",
                        lambda self, prompt, completion: [table[completion]])
    return table


def rows(n: int) -> list[dict]:
    """n prompts, each with a corrected (liked) and a disliked answer. Liked answers to later
    prompts happen to be less likely than disliked answers to earlier ones."""
    out = []
    for i in range(n):
        out += [{"prompt": f"p{i}", "completion": f"good{i}", "label": True},
                {"prompt": f"p{i}", "completion": f"bad{i}", "label": False}]
    return out


def test_same_prompt_pairs_are_used_when_there_are_enough(scores) -> None:  # type: ignore[no-untyped-def]
    for i in range(6):
        scores[f"good{i}"], scores[f"bad{i}"] = -1.0 - i, -1.5 - i
    # Within each prompt the liked answer wins; across prompts it often loses.
    assert evaluate.preference_accuracy(None, None, rows(6)) == 1.0


def test_too_few_same_prompt_pairs_falls_back_to_all_pairs(scores) -> None:  # type: ignore[no-untyped-def]
    for i in range(2):
        scores[f"good{i}"], scores[f"bad{i}"] = -1.0 - i, -1.5 - i
    # good0 -1.0 beats bad0 -1.5 and bad1 -2.5; good1 -2.0 beats bad1 but not bad0: 3 of 4.
    assert evaluate.preference_accuracy(None, None, rows(2)) == 0.75


def test_without_both_labels_there_is_nothing_to_compare(scores) -> None:  # type: ignore[no-untyped-def]
    assert evaluate.preference_accuracy(None, None, [r for r in rows(3) if r["label"]]) is None


def test_the_held_out_sample_ranks_references_then_pairs_and_is_stable() -> None:
    mixed = rows(4)  # p0..p3: a 👍 and a 👎 each
    liked_only = [{"prompt": f"q{i}", "completion": f"fine{i}", "label": True} for i in range(6)]
    everything = liked_only + mixed
    sample = evaluate.sample_prompts(everything, 5)
    assert len(sample) == 5 and set(sample[:4]) == {"p0", "p1", "p2", "p3"}  # pairs first
    assert sample[4].startswith("q")
    assert evaluate.sample_prompts(list(reversed(everything)), 5) == sample  # order aside
    assert set(evaluate.sample_prompts(everything, 0)) == {r["prompt"] for r in everything}
    checked = evaluate.sample_prompts(everything, 3, prefer={"q5", "p2"})
    assert checked[0] in {"q5", "p2"} and checked[1] in {"q5", "p2"}  # references first
    assert checked[0] == "p2"  # a reference with a pair before one without


def test_each_answer_is_scored_once_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def compute(self, prompt: str, completion: str) -> list[float]:
        calls.append(completion)
        return [-1.0 if completion.startswith("good") else -2.0]

    monkeypatch.setattr(evaluate.LogProbs, "_compute", compute)
    shared = evaluate.LogProbs(None, None)
    data = rows(6)
    evaluate.preference_accuracy(None, None, data, logprobs=shared)
    evaluate.answer_loss(None, None, [r for r in data if r["label"]], logprobs=shared)
    assert sorted(calls) == sorted(r["completion"] for r in data)


@pytest.mark.slow
def test_answers_scored_from_the_reading_for_generation_match_a_separate_forward() -> None:
    """`greedy_answers` reads each prompt once and scores rated answers from that reading;
    the scores are those of a separate forward pass over prompt and answer."""
    from transformers import AutoTokenizer

    from bot.model import load_model, resolve_base_model
    from tests.conftest import MODEL_CACHE

    path = resolve_base_model("", MODEL_CACHE)
    model, tokenizer = load_model(path), AutoTokenizer.from_pretrained(path)
    system = "<|im_start|>system\nYou answer from the excerpts, briefly.<|im_end|>\n"
    prompts = [system + f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
               for q in ("When does the shop open? It opens at nine.",
                         "How long do refunds take? Refunds take fourteen days, paid back to "
                         "the card you used.", "Hi")]
    completions = {prompts[0]: ["At nine.", "Maybe at ten, I think."],
                   prompts[1]: ["Fourteen days (Source: Refunds)."]}
    shared = evaluate.LogProbs(model, tokenizer)
    answers = evaluate.greedy_answers(model, tokenizer, prompts, max_new_tokens=8,
                                      logprobs=shared, completions=completions)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    separate = evaluate.LogProbs(model, tokenizer)
    for prompt, answers_to_score in completions.items():
        for completion in answers_to_score:
            read_along = shared._seen[(prompt, completion)]
            alone = separate._compute(prompt, completion)
            assert len(read_along) == len(alone) > 0
            assert max(abs(a - b) for a, b in zip(read_along, alone, strict=True)) < 1e-3
    plain = []
    for prompt in prompts:  # answers are those of reading each prompt alone
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, no_repeat_ngram_size=4,
                             pad_token_id=tokenizer.eos_token_id)
        plain.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:],
                                      skip_special_tokens=True))
    assert answers == plain
