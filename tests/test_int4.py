"""Answers written in 4 bits (bot/model/int4.py): exact packing, and only of what is 4-bit
(the decoder that uses them: tests/test_decoder.py)."""

from __future__ import annotations

import pytest
import torch

from bot.model import int4
from bot.model.local import serving_dtype


def four_bit(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    """A matrix as GGUF's Q4_1 dequantises one: `m + d * q` per block of 32 inputs, d and m
    half-precision numbers, every block holding its lowest and highest level."""
    generator = torch.Generator().manual_seed(seed)
    blocks = in_features // int4.GROUP
    q = torch.randint(0, 16, (out_features, blocks, int4.GROUP), generator=generator)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(out_features, blocks, 1, generator=generator) * 0.02 + 0.001).half().float()
    m = (-torch.rand(out_features, blocks, 1, generator=generator) * 0.1).half().float()
    return (m + d * q).reshape(out_features, in_features)


def tiny_llama(layer_weights: str = "4bit") -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if layer_weights == "4bit":
        with torch.no_grad():
            for seed, module in enumerate(model.model.layers.modules()):
                if isinstance(module, torch.nn.Linear):
                    module.weight.copy_(four_bit(*module.weight.shape, seed=seed))
    return model


def test_a_4bit_matrix_is_packed_exactly_and_multiplies_as_before() -> None:
    weight = four_bit(64, 128)
    linear = int4.int4_linear(weight)
    assert linear is not None
    x = torch.randn(3, 5, 128)
    expected = x @ weight.t()
    got = linear(x.bfloat16()).float()
    assert got.shape == (3, 5, 64)
    # bfloat16 activations: within bfloat16's rounding of the inputs, not of the weights
    assert torch.allclose(got, expected, atol=0.02 * expected.abs().max().item())


def test_a_matrix_that_is_not_4bit_is_left_alone() -> None:
    weight = four_bit(64, 128)
    nudged = weight.clone()
    nudged[3, 7] += 1e-3  # what a merged LoRA adapter does to the weights it touches
    assert int4.int4_linear(nudged) is None
    assert int4.int4_linear(torch.randn(64, 128)) is None
    assert int4.int4_linear(four_bit(64, 128)[:, :100]) is None  # not whole blocks of 32


def test_the_int8_output_layer_is_close_to_the_float_one() -> None:
    weight = torch.randn(96, 64)
    x = torch.randn(4, 64)
    got = int4.int8_linear(weight)(x.bfloat16()).float()
    expected = x @ weight.t()
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()


@pytest.mark.parametrize(("flags", "device", "expected"), [
    ({"avx2", "avx512_bf16", "amx_tile"}, "cpu", "bfloat16"),
    ({"avx2", "avx512_bf16"}, "cpu", "bfloat16"),  # AVX512-BF16's dot products, no AMX
    ({"avx2"}, "cpu", "float32"),
    (set(), "cuda", "bfloat16"),
])
def test_auto_dtype_follows_the_hardware(monkeypatch: pytest.MonkeyPatch, flags: set[str],
                                         device: str, expected: str) -> None:
    from knowledge import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    assert serving_dtype("auto", device) == expected
    assert serving_dtype("float32", device) == "float32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        serving_dtype("float16", device)


def test_int4_decoding_is_automatic_only_where_bfloat16_is_in_hardware(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from knowledge import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma"})
    assert not int4.supported()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert int4.supported()
