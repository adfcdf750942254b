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


@pytest.mark.slow
def test_only_the_top_layers_train_and_backpropagation_stops_below_them(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from peft import LoraConfig, TaskType, get_peft_model

    from bot.model import load_model
    from tuning.train import train_top_layers

    model = get_peft_model(load_model(resolve_base_model("", MODEL_CACHE), trainable=True),
                           LoraConfig(task_type=TaskType.CAUSAL_LM, r=4,
                                      target_modules=["q_proj", "v_proj"]))
    layers = model.config.num_hidden_layers
    train_top_layers(model, 3)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and {int(n.split(".layers.")[1].split(".")[0]) for n in trainable} == \
        set(range(layers - 3, layers))
    outputs: dict[int, torch.Tensor] = {}
    blocks = model.get_base_model().model.layers
    for i in (layers - 4, layers - 3):
        blocks[i].register_forward_hook(
            lambda module, args, out, i=i: outputs.__setitem__(i, out[0] if isinstance(out, tuple)
                                                               else out))
    batch = AnswerOnlyCollator(tokenizer.eos_token_id)([encode(tokenizer, r, 512) for r in ROWS])
    model(**batch).loss.backward()
    assert not outputs[layers - 4].requires_grad  # no gradient flows below the top three
    assert outputs[layers - 3].requires_grad
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert all(g is None for n, g in grads.items() if f".layers.{layers - 4}." in n)
    assert all(g is not None for n, g in grads.items() if f".layers.{layers - 1}." in n)


@pytest.mark.slow
def test_reading_the_shared_start_once_gives_the_same_loss_and_gradients(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from peft import LoraConfig, TaskType, get_peft_model

    from bot.model import load_model
    from tuning.train import read_prefix

    torch.manual_seed(0)
    model = get_peft_model(load_model(resolve_base_model("", MODEL_CACHE), trainable=True),
                           LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, init_lora_weights=False,
                                      target_modules=["q_proj", "k_proj", "v_proj"]))
    system = ("<|im_start|>system\nYou are a helpful assistant. Answer from the excerpts you "
              "are given, cite them, or say you do not know.<|im_end|>\n")
    rows = [{"prompt": system + r["prompt"], "completion": r["completion"]} for r in ROWS]
    rows.append({"prompt": system + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                 "completion": "Hello!"})
    features = [encode(tokenizer, r, 512) for r in rows]
    prefix_tokens = len(tokenizer(system, add_special_tokens=False)["input_ids"])

    def loss_and_grads(share: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        model.zero_grad()
        batch = AnswerOnlyCollator(tokenizer.eos_token_id, share_prefix=share)(features)
        prefix = batch.pop("prefix_ids", None)
        if prefix is not None:
            batch["cache"] = read_prefix(model, prefix, len(features))
        loss = model(**batch).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, {"prefix": prefix, "width": batch["input_ids"].shape[1]}

    plain_loss, plain_grads, plain = loss_and_grads(0)
    shared_loss, shared_grads, shared = loss_and_grads(16)
    assert plain["prefix"] is None
    assert shared["prefix"] is not None and shared["prefix"].shape[1] >= prefix_tokens - 1
    assert shared["width"] == plain["width"] - shared["prefix"].shape[1]
    assert torch.isclose(plain_loss, shared_loss, atol=1e-5), (plain_loss, shared_loss)
    assert plain_grads.keys() == shared_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        error = (grad - shared_grads[name]).norm() / grad.norm()
        assert error < 1e-3, (name, float(error))  # summed in another order, no more
