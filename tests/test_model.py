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


def test_concurrent_requests_are_written_together(tmp_path: Path) -> None:
    import threading
    import time

    model = load(tmp_path / "adapters")
    questions = ["Say hello.", "Name a colour.", "Count to three.", "Say goodbye."]
    chats = {q: [CHAT[0], {"role": "user", "content": q}] for q in questions}
    alone = {q: model.generate(chats[q]) for q in questions}
    results: dict[str, str] = {}
    streamed: dict[str, list[str]] = {q: [] for q in questions}

    def ask(q: str) -> None:
        results[q] = model.generate(chats[q], on_text=streamed[q].append).text

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    with model._lock:  # all four wait before the first token: they start together
        for t in threads:
            t.start()
        while len(model._pending) < len(questions):
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert model.most_in_flight == len(questions)
    assert set(results) == set(questions) and all(results.values())
    assert all(streamed[q] and streamed[q][-1].strip() == results[q] for q in questions)
    # In float32, company changes no answer (the rows leave at different tokens, from the
    # middle of the cache too).
    assert results == {q: alone[q].text for q in questions}


def test_the_shared_prompt_start_is_read_once_and_changes_no_answer(tmp_path: Path) -> None:
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
    # Read together, as `[start][pads][row]`, each row's cache cut out of the batch's.
    import threading
    import time

    batched: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: batched.update({i: model.generate(chats[i]).text}))
               for i in range(len(chats))]
    with model._lock:
        for t in threads:
            t.start()
        while len(model._pending) < len(chats):
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert [batched[i] for i in range(len(chats))] == reference


def test_answers_are_written_with_the_packaged_4bit_weights(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from bot.model.decoder import Dense, Slots

    adapters = tmp_path / "adapters"
    model = load(adapters, decode_int4="true")
    assert model.decoding == "int4" and model.model.dtype == torch.float32
    assert model._flight is not None
    decoder = model._flight.decoder
    # Every layer matrix of the Q4_1 GGUF is exactly 4-bit: 30 layers x 4 fused groups (q/k/v,
    # out, gate/up, down).
    assert decoder.packed() == 30 * 4
    partials: list[str] = []
    gen = model.generate(CHAT, on_text=partials.append)
    assert gen.text and gen.new_tokens > 0 and partials[-1].strip() == gen.text
    # Teacher-forced over the prompt and that answer, it predicts what float32 predicts.
    ids = model.tokenizer(gen.prompt + gen.text, return_tensors="pt",
                          add_special_tokens=False)["input_ids"]
    slots = Slots(decoder, rows=1)
    slots.add([], 0)
    with torch.no_grad():
        expected = model.model(ids).logits.argmax(-1)[0]
        got = torch.stack([decoder.step(slots, [t])[0] for t in ids[0].tolist()]).argmax(-1)
    assert (got == expected).float().mean().item() >= 0.9

    # A promoted adapter merged into q_proj and v_proj: those layers' q/k/v group is no longer
    # 4-bit and stays bfloat16, the other 90 groups are packed, and the answer says which
    # adapter wrote it.
    donor = load(tmp_path / "none")
    get_peft_model(donor.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False)).save_pretrained(
        adapters / "v0001")
    (adapters / "CURRENT").write_text("v0001")
    assert model.generate(CHAT).adapter_version == "v0001"
    assert model.decoding == "int4" and model._flight is not None
    decoder = model._flight.decoder
    assert decoder.packed() == 30 * 3
    qkv = decoder.layers[0].qkv
    assert isinstance(qkv, Dense) and qkv.weight.dtype == torch.bfloat16


def test_generation_timeout_keeps_the_answer_so_far(tmp_path: Path) -> None:
    import time

    model = HFChatModel("", MODEL_CACHE, tmp_path / "adapters", max_new_tokens=2000,
                        max_time=1.0)
    long_chat = [CHAT[0], {"role": "user", "content": "Write a very long story about a cat."}]
    started = time.monotonic()
    gen = model.generate(long_chat)
    assert time.monotonic() - started < 10
    assert gen.text and 0 < gen.new_tokens < 2000


def test_a_promotion_waits_for_the_answers_in_flight(tmp_path: Path) -> None:
    import threading
    import time

    from peft import LoraConfig, get_peft_model

    adapters = tmp_path / "adapters"
    model = HFChatModel("", MODEL_CACHE, adapters, max_new_tokens=2000, max_time=2.0,
                        dtype="float32", decode_int4="false")
    donor = load(tmp_path / "none")
    get_peft_model(donor.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False)).save_pretrained(
        adapters / "v0001")
    story = [CHAT[0], {"role": "user", "content": "Write a very long story about a cat."}]
    answers: dict[str, object] = {}
    first = threading.Thread(target=lambda: answers.update(first=model.generate(story)))
    first.start()
    while model._flight is None or not len(model._flight):
        time.sleep(0.01)
    (adapters / "CURRENT").write_text("v0001")  # promoted while the story is being written
    answers["second"] = model.generate(CHAT)
    first.join()
    assert answers["first"].adapter_version == "base"  # type: ignore[attr-defined]
    assert answers["first"].new_tokens > 12  # type: ignore[attr-defined]  # not cut short
    assert answers["second"].adapter_version == "v0001"  # type: ignore[attr-defined]


def test_architectures_the_decoder_does_not_know_answer_through_generate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from bot.model.decoder import Decoder

    monkeypatch.setattr(Decoder, "supports", staticmethod(lambda model: False))
    model = load(tmp_path / "adapters")
    assert model._flight is None and model.decoding == "float32"
    partials: list[str] = []
    alone = model.generate(CHAT, on_text=partials.append)
    assert alone.text and partials[-1].strip() == alone.text and model.batches_run == 1
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(model.generate(CHAT).text))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(results) and model.batches_run <= 4


def test_a_failure_while_writing_reaches_its_callers_and_the_model_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load(tmp_path / "adapters")
    assert model._flight is not None
    decoder = model._flight.decoder
    real, calls = decoder.step, []

    def flaky(slots, tokens):  # type: ignore[no-untyped-def]
        calls.append(len(tokens))
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(slots, tokens)

    monkeypatch.setattr(decoder, "step", flaky)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.generate(CHAT)
    assert model.generate(CHAT).text and len(model._flight) == 0
