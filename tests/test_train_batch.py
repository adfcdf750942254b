"""Training batches: the loss is on the answer only, and trimming the LM head to the answers
computes exactly the loss the full forward does."""

from __future__ import annotations

import pytest
import torch

from bot.model import resolve_base_model
from tests.conftest import MODEL_CACHE
from tuning.train import AnswerOnlyCollator, encode

ROWS = [{"prompt": "<|im_start|>user\nWhen does the shop open? The shop opens at nine.<|im_end|>\n"
                   "<|im_start|>assistant\n",
         "completion": "At nine (Source: Opening hours)."},
        {"prompt": "<|im_start|>user\nHow long do refunds take?<|im_end|>\n<|im_start|>assistant\n",
         "completion": "Refunds take fourteen days, paid back to the original card "
                       "(Source: Refunds)."}]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base_model("", MODEL_CACHE))


def test_labels_cover_the_answer_and_eos_only(tokenizer) -> None:  # type: ignore[no-untyped-def]
    row = encode(tokenizer, ROWS[0], max_length=512)
    assert row is not None
    answer = [t for t in row["labels"] if t != -100]
    assert tokenizer.decode(answer) == ROWS[0]["completion"] + tokenizer.eos_token
    assert row["input_ids"][-len(answer):] == answer


def test_too_long_rows_are_skipped_never_cut(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A cut prompt would lose its start (the system prompt): a train/serve skew."""
    whole = encode(tokenizer, ROWS[1], max_length=512)
    assert whole is not None
    assert encode(tokenizer, ROWS[1], max_length=len(whole["input_ids"])) == whole
    assert encode(tokenizer, ROWS[1], max_length=len(whole["input_ids"]) - 1) is None


def test_served_prompts_fit_the_training_length() -> None:
    from bot.config import Settings
    from bot.services.chat import ChatLimits
    from tuning.config import TuneConfig

    assert ChatLimits().max_prompt_tokens + Settings(_env_file=None).max_new_tokens \
        <= TuneConfig().max_length


@pytest.mark.slow
def test_trimmed_batch_gives_the_same_loss_as_the_full_forward(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_base_model("", MODEL_CACHE),
                                                 dtype=torch.float32).eval()
    features = [encode(tokenizer, r, 512) for r in ROWS]
    trimmed = AnswerOnlyCollator(tokenizer.eos_token_id)(features)
    full = AnswerOnlyCollator(tokenizer.eos_token_id, trim=False)(features)
    assert trimmed["labels"].shape[1] < full["labels"].shape[1]
    assert trimmed["input_ids"][:, -1].tolist() == [tokenizer.eos_token_id] * 2  # left-padded
    with torch.no_grad():
        loss_trimmed = model(**trimmed).loss
        loss_full = model(**full).loss
    assert torch.isclose(loss_trimmed, loss_full, atol=1e-5), (loss_trimmed, loss_full)
