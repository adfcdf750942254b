"""The real packaged chat model: conversion cache, generation, streaming, LoRA adapter pickup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.model import HFChatModel
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.slow

CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello."}]


def load(adapters: Path, **options: str) -> HFChatModel:
    """The model in float32 throughout unless a test says otherwise: the tests below compare
    answers and logits exactly, which bfloat16 and 4-bit answers (the default on CPUs with
    AVX512-BF16 or AMX) do not promise."""
    return HFChatModel("", MODEL_CACHE, adapters, max_new_tokens=12,
                       **{"dtype": "float32", "decode_int4": "false", **options})


def test_packaged_model_generates_and_streams(tmp_path: Path) -> None:
    model = load(tmp_path / "adapters")
    assert (MODEL_CACHE / "SmolLM2-135M-Instruct.Q4_1" / "model.safetensors").exists()
    partials: list[str] = []
    gen = model.generate(CHAT, on_text=partials.append)
    assert gen.text and gen.new_tokens > 0 and gen.adapter_version == "base"
    assert "<|im_start|>assistant" in gen.prompt  # rendered with the model's chat template
    assert len(partials) >= 2 and partials[-1].strip() == gen.text
    assert all(b.startswith(a) for a, b in zip(partials, partials[1:]))


def test_current_adapter_is_applied_at_load(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    adapters = tmp_path / "adapters"
    base = load(adapters)
    ids = base.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = base.model(ids).logits
    # A LoRA adapter with non-zero weights, registered as v0001 and made current.
    lora = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    lora.save_pretrained(adapters / "v0001")
    (adapters / "CURRENT").write_text("v0001")
    with torch.no_grad():
        lora_logits = lora(input_ids=ids).logits

    tuned = load(adapters)
    assert tuned.adapter_version == "v0001"
    with torch.no_grad():
        tuned_logits = tuned.model(ids).logits
    assert not torch.allclose(base_logits, tuned_logits)
    # Served merged into the weights: no LoRA layers left, the same model all the same.
    assert not any("lora" in name for name, _ in tuned.model.named_modules())
    assert torch.allclose(lora_logits, tuned_logits, atol=1e-4)
    assert tuned.generate(CHAT).adapter_version == "v0001"


def test_running_model_hot_swaps_on_promotion_and_rollback(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from tuning.registry import AdapterRegistry

    registry = AdapterRegistry(tmp_path / "adapters")
    model = load(registry.root)
    assert model.generate(CHAT).adapter_version == "base"
    staging = registry.staging_dir()
    donor = load(tmp_path / "none")
    get_peft_model(donor.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False)).save_pretrained(staging)
    version = registry.commit(staging, {"test": True})
    registry.promote(version)
    assert model.generate(CHAT).adapter_version == version  # no restart, no reload call
    registry.rollback()
    assert model.generate(CHAT).adapter_version == "base"
    # A broken adapter never takes the bot down: it keeps serving what it had.
    broken = registry.staging_dir()
    (broken / "adapter_config.json").write_text("{not json")
    registry.promote(registry.commit(broken, {}))
    assert model.generate(CHAT).adapter_version == "base"


def test_concurrent_requests_are_batched(tmp_path: Path) -> None:
    import threading

    model = load(tmp_path / "adapters")
    alone = model.generate(CHAT).text
    questions = ["Say hello.", "Name a colour.", "Count to three.", "Say goodbye."]
    results: dict[str, str] = {}
    streamed: dict[str, list[str]] = {q: [] for q in questions}

    def ask(q: str) -> None:
        chat = [CHAT[0], {"role": "user", "content": q}]
        results[q] = model.generate(chat, on_text=streamed[q].append).text

    before = model.batches_run
    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == set(questions) and all(results.values())
    assert model.batches_run - before < len(questions)  # some of them shared a batch
    assert all(streamed[q] and streamed[q][-1].strip() == results[q] for q in questions)
    assert results["Say hello."] == alone  # left padding does not change a greedy answer


def test_the_shared_prompt_start_is_read_once_and_changes_no_answer(tmp_path: Path) -> None:
    import threading

    from bot.config import DEFAULT_SYSTEM_PROMPT
    from bot.model.prefix import PrefixCache

    model = load(tmp_path / "adapters")
    questions = ["Say hello.", "Name a colour.", "Count to three.", "Say goodbye."]
    chats = [[{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
              {"role": "user", "content": q}] for q in questions]
    model._prefix = PrefixCache(min_tokens=10**6)  # never caches: every prompt read in full
    reference = [model.generate(chat).text for chat in chats]
    model._prefix = PrefixCache()
    assert [model.generate(chat).text for chat in chats] == reference
    assert model._prefix.hits == 3  # all but the first: the second taught it the shared start
    assert len(model._prefix.ids) >= 40  # the system prompt's tokens
    batched: dict[int, str] = {}

    def ask(i: int) -> None:
        batched[i] = model.generate(chats[i]).text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(chats))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [batched[i] for i in range(len(chats))] == reference  # [start][pads][row] rows


def test_answers_are_written_with_the_packaged_4bit_weights(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from bot.model.int4 import Int4Linear

    adapters = tmp_path / "adapters"
    model = load(adapters, decode_int4="true")
    assert model.decoding == "int4" and model.model.dtype == torch.float32
    # Every layer matrix of the Q4_1 GGUF is exactly 4-bit: 30 layers x 7 matrices.
    assert sum(isinstance(m, Int4Linear) for m in model.decoder.modules()) == 30 * 7
    partials: list[str] = []
    gen = model.generate(CHAT, on_text=partials.append)
    assert gen.text and gen.new_tokens > 0 and partials[-1].strip() == gen.text
    # Teacher-forced over the prompt and that answer, it predicts what float32 predicts.
    ids = model.tokenizer(gen.prompt + gen.text, return_tensors="pt",
                          add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model.model(ids).logits.argmax(-1)
        got = model.decoder(ids).logits.argmax(-1)
    assert (got == expected).float().mean().item() >= 0.9

    # A promoted adapter merged into q_proj and v_proj: those 60 matrices are no longer 4-bit
    # and stay bfloat16, the other 150 are packed, and the answer says which adapter wrote it.
    donor = load(tmp_path / "none")
    get_peft_model(donor.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False)).save_pretrained(
        adapters / "v0001")
    (adapters / "CURRENT").write_text("v0001")
    assert model.generate(CHAT).adapter_version == "v0001"
    assert model.decoding == "int4"
    assert sum(isinstance(m, Int4Linear) for m in model.decoder.modules()) == 30 * 5
    assert model.decoder.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


def test_generation_timeout_keeps_the_answer_so_far(tmp_path: Path) -> None:
    import time

    model = HFChatModel("", MODEL_CACHE, tmp_path / "adapters", max_new_tokens=2000,
                        max_time=1.0)
    long_chat = [CHAT[0], {"role": "user", "content": "Write a very long story about a cat."}]
    started = time.monotonic()
    gen = model.generate(long_chat)
    assert time.monotonic() - started < 10
    assert gen.text and 0 < gen.new_tokens < 2000
