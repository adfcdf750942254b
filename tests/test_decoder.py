"""The decoder that writes answers (bot/model/decoder.py) and the chats in flight on it
(bot/model/inflight.py), on a tiny random Llama: the same logits and the same tokens as
transformers, rows joining and leaving between tokens, and how an answer ends."""

from __future__ import annotations

import torch

from bot.model.decoder import Decoder, Dense, Slots
from bot.model.inflight import Choosing, InFlight, Request
from bot.model.int4 import Int4Linear, Int8Linear
from tests.test_int4 import tiny_llama


def prompt_cache(model: torch.nn.Module, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The key/value cache of all of `ids` but the last token, as the chat model hands it over."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=torch.tensor([ids[:-1]]), cache=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def test_rows_of_different_lengths_get_transformers_logits_as_they_join_and_leave() -> None:
    model = tiny_llama("random")
    decoder = Decoder(model, dtype=torch.float32, int4=False)
    assert Decoder.supports(model) and decoder.packed() == 0
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 96, (n,), generator=generator).tolist() for n in (5, 11, 2)]
    slots = Slots(decoder, rows=3, length=4)  # too short on purpose: it has to grow
    for ids in prompts[:2]:
        slots.add(prompt_cache(model, ids), len(ids) - 1)
    followers = [7, 8, 9]
    logits = decoder.step(slots, [prompts[0][-1], prompts[1][-1]])
    slots.remove(0)  # the first chat leaves; the second moves into its row
    slots.add(prompt_cache(model, prompts[2]), len(prompts[2]) - 1)  # a third one joins
    later = decoder.step(slots, [followers[1], prompts[2][-1]])
    with torch.no_grad():
        expected = [model(torch.tensor([ids])).logits[0, -1] for ids in prompts]
        expected_later = model(torch.tensor([prompts[1] + [followers[1]]])).logits[0, -1]
    assert torch.allclose(logits[0], expected[0], atol=1e-4)
    assert torch.allclose(logits[1], expected[1], atol=1e-4)
    assert torch.allclose(later[0], expected_later, atol=1e-4)
    assert torch.allclose(later[1], expected[2], atol=1e-4)
    assert slots.lengths == [len(prompts[1]) + 1, len(prompts[2])]


def test_4bit_weights_are_packed_fused_and_predict_like_the_model() -> None:
    model = tiny_llama()
    decoder = Decoder(model, dtype=torch.float32, int4=True)
    assert decoder.packed() == 2 * 4  # qkv, out, gate/up, down in both layers
    assert isinstance(decoder.layers[0].qkv, Int4Linear) and isinstance(decoder.head, Int8Linear)
    assert decoder.dtype == torch.bfloat16  # the int4 kernel's activations
    ids = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(1)).tolist()
    slots = Slots(decoder, rows=1)
    slots.add([], 0)
    got = torch.stack([decoder.step(slots, [token])[0] for token in ids])
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.9
    assert torch.allclose(got.softmax(-1), expected.softmax(-1), atol=0.05)
    # A matrix a merged adapter changed is not 4-bit: its fused group stays dense, bfloat16.
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[0, 0] += 1e-3
    changed = Decoder(model, dtype=torch.float32, int4=True)
    assert changed.packed() == 2 * 4 - 1
    qkv = changed.layers[1].qkv
    assert isinstance(qkv, Dense) and qkv.weight.dtype == torch.bfloat16


def test_only_plain_llamas_are_supported() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    assert Decoder.supports(tiny_llama("random"))
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=1, num_attention_heads=4,
                                        num_key_value_heads=2))
    assert not Decoder.supports(qwen)  # q/k/v biases, which the step does not add
    from peft import PromptTuningConfig, get_peft_model

    prompted = get_peft_model(tiny_llama("random"),
                              PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert not Decoder.supports(prompted)  # its virtual tokens live outside the weights


def flight(model: torch.nn.Module, **choosing: object) -> InFlight:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(96)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    decoder = Decoder(model, dtype=torch.float32, int4=False)
    settings = {"max_new_tokens": 10, **choosing}
    return InFlight(decoder, fast, Choosing(**settings), rows=4,  # type: ignore[arg-type]
                    version="v0007")


def run(chats: InFlight, model: torch.nn.Module, prompts: list[list[int]],
        on_text: object = None) -> list[Request]:
    requests = [Request(f"prompt {i}", on_text) for i in range(len(prompts))]  # type: ignore[arg-type]
    for request, ids in zip(requests, prompts, strict=True):
        chats.join(request, ids, prompt_cache(model, ids))
    while len(chats):
        chats.step()
    return requests


def test_answers_are_the_tokens_transformers_generate_chooses() -> None:
    model = tiny_llama("random")
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 96, (n,), generator=generator).tolist() for n in (6, 9, 4)]
    options = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    chats = flight(model, stop_strings=(), end_ids=frozenset({2}), **options)
    done = run(chats, model, prompts)
    for request, ids in zip(done, prompts, strict=True):
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                 eos_token_id=2, pad_token_id=2, **options)
        expected = [t for t in out[0, len(ids):].tolist() if t != 2]
        assert request.result is not None and request.done.is_set()
        assert request.result.text == " ".join(f"w{t}" for t in expected)
        assert request.result.new_tokens == len(expected)
        assert request.result.adapter_version == "v0007"
    assert not chats.slots.lengths  # every row left


def test_an_answer_ends_at_a_stop_string_or_its_limit_and_streams_as_it_grows() -> None:
    model = tiny_llama("random")
    prompt = [5, 6, 7, 8]
    never_twice = {"no_repeat_ngram_size": 1}  # every word of the answer differs
    free = run(flight(model, stop_strings=(), **never_twice), model, [prompt])[0].result
    assert free is not None and free.new_tokens == 10  # no end id: the limit ends it
    words = free.text.split()
    assert len(set(words)) == 10
    stopped = run(flight(model, stop_strings=(f"{words[2]} ",), **never_twice), model,
                  [prompt])[0].result
    # the stop string is the third word and the space that follows it (in the fourth token)
    assert stopped is not None and stopped.text.split() == words[:4]
    seen: list[str] = []

    def show(text: str) -> None:
        seen.append(text)
        raise RuntimeError("a broken display")  # must not break the answer

    streamed = run(flight(model, stop_strings=(), **never_twice), model, [prompt],
                   on_text=show)[0].result
    assert streamed is not None and streamed.text == free.text
    assert len(seen) == 10 and seen[-1] == free.text
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:]))


def test_a_failing_step_fails_every_chat_in_flight() -> None:
    model = tiny_llama("random")
    chats = flight(model)
    requests = [Request("a", None), Request("b", None)]
    for request in requests:
        chats.join(request, [4, 5, 6], prompt_cache(model, [4, 5, 6]))
    chats.decoder.step = lambda slots, tokens: (_ for _ in ()).throw(  # type: ignore[method-assign]
        MemoryError("out of memory"))
    chats.step()  # logged; each chat's caller gets the error
    assert all(isinstance(r.error, MemoryError) and r.done.is_set() for r in requests)
    assert len(chats) == 0 and not chats.slots.lengths


def test_sampling_follows_the_temperature() -> None:
    model = tiny_llama("random")
    torch.manual_seed(0)
    sampled = [run(flight(model, stop_strings=(), temperature=5.0), model, [[5, 6, 7]])[0]
               for _ in range(3)]
    greedy = [run(flight(model, stop_strings=()), model, [[5, 6, 7]])[0] for _ in range(2)]
    texts = {r.result.text for r in sampled if r.result}
    assert len(texts) > 1  # hot sampling over 96 tokens: three identical answers would be a bug
    assert greedy[0].result and greedy[1].result and greedy[0].result.text == greedy[1].result.text


def test_a_long_prompt_s_room_is_given_back_when_the_flight_empties() -> None:
    model = tiny_llama("random")
    chats = flight(model, stop_strings=())
    long_prompt = [(i % 90) + 3 for i in range(700)]
    chats.join(Request("long", None), long_prompt, prompt_cache(model, long_prompt))
    assert chats.slots.capacity == 1024  # doubled from 512 to hold it
    while len(chats):
        chats.step()
    assert chats.slots.capacity == Slots.LENGTH


def test_weights_in_the_model_s_dtype_are_shared_with_it_not_copied() -> None:
    model = tiny_llama("random")
    ids = torch.tensor([[5, 9, 14, 3, 27]])
    with torch.no_grad():
        before = model(ids).logits
    decoder = Decoder(model, dtype=torch.float32, int4=False)
    attention = model.model.layers[1].self_attn
    fused = decoder.layers[1].qkv
    assert isinstance(fused, Dense)
    assert attention.q_proj.weight.data_ptr() == fused.weight.data_ptr()
    assert attention.v_proj.weight.untyped_storage().data_ptr() == \
        fused.weight.untyped_storage().data_ptr()
    assert model.model.embed_tokens.weight.data_ptr() == decoder.embeddings.data_ptr()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # the model computes as it did
    # In another dtype nothing is shared: the model keeps its own.
    other = tiny_llama("random")
    bf16 = Decoder(other, dtype=torch.bfloat16, int4=False)
    assert other.model.layers[1].self_attn.q_proj.weight.dtype == torch.float32
    assert other.model.layers[1].self_attn.q_proj.weight.data_ptr() != \
        bf16.layers[1].qkv.weight.data_ptr()


def test_chats_joining_at_different_times_each_get_their_own_answer() -> None:
    model = tiny_llama("random")
    generator = torch.Generator().manual_seed(9)
    prompts = [torch.randint(3, 96, (n,), generator=generator).tolist() for n in (7, 5, 9, 6)]
    chats = flight(model, stop_strings=(), no_repeat_ngram_size=2)
    requests = []
    for i, ids in enumerate(prompts):  # each joins two tokens after the one before: the rows
        request = Request(f"prompt {i}", None)  # leave in another order than they came, from
        requests.append(request)  # the middle of the cache as well as from its end
        chats.join(request, ids, prompt_cache(model, ids))
        for _ in range(2):
            chats.step()
    while len(chats):
        chats.step()
    for request, ids in zip(requests, prompts, strict=True):
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                 no_repeat_ngram_size=2, pad_token_id=0)
        assert request.result is not None
        assert request.result.text == " ".join(f"w{t}" for t in out[0, len(ids):].tolist())
