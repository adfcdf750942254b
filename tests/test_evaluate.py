"""Preference accuracy compares a 👍 answer with a 👎 answer to the same prompt when it can."""

from __future__ import annotations

import pytest

import tuning.evaluate as evaluate


@pytest.fixture
def scores(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The model's mean log-prob of each completion, whatever the prompt."""
    table: dict[str, float] = {}
    monkeypatch.setattr(evaluate, "_completion_logprobs",
                        lambda model, tok, prompt, completion: [table[completion]])
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
