"""Answers written with 4-bit weights, read from the packaged model exactly.

Writing an answer reads every weight of the model once per token, so on a CPU a token costs
what fetching the weights from memory costs: 538 MB in float32 for the 135M model. The packaged
model is a Q4_1 GGUF: in each group of 32 inputs of a layer's matrix, every weight is
`min + q * step` with q in 0..15. Those groups are packed again as they were, four bits a
weight (torch's `_weight_int4pack_mm_for_cpu`, the kernel torchao's int4 weight-only layers
use), and the decoder that writes answers (bot/model/decoder.py) multiplies with them: about
60 MB of layer weights a token instead of 425 MB. The tied output layer (the token embeddings,
not Q4_1 in the GGUF) becomes int8 with one scale per token row (`_weight_int8pack_mm`).

The kernels take bfloat16 activations (with float32 ones the int4 kernel falls back to a slow
path), so the decoder then computes in bfloat16: the model that reads the prompt hands its
cache over in bfloat16 (`prefix.read_prompt`). A matrix that is not exactly 4-bit (another
BASE_MODEL, or layers a merged LoRA adapter changed) keeps its bfloat16 weights: nothing is a
lossy quantisation of weights that were not 4-bit to begin with.
"""

from __future__ import annotations

import logging

import torch

from knowledge.cpu import bfloat16_in_hardware

logger = logging.getLogger(__name__)

GROUP = 32  # GGUF's Q4_0/Q4_1 block size along a matrix's inputs


def supported() -> bool:
    """Whether this machine runs the kernels fast: they want bfloat16 arithmetic in hardware
    (AVX512-BF16, AMX). Elsewhere bfloat16 is emulated; not measured there, so not used."""
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and bfloat16_in_hardware()


class PackedLinear(torch.nn.Module):
    """A linear layer without bias whose weights are packed for one of torch's kernels."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        return self.matmul(rows).reshape(*x.shape[:-1], self.out_features)

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Int4Linear(PackedLinear):
    """Four bits a weight, `(q - 8) * scale + zero` per group of GROUP inputs."""

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                 out_features: int) -> None:
        super().__init__(out_features)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP,
                                                 self.scales_and_zeros)


class Int8Linear(PackedLinear):
    """Int8 weights with one scale per output row."""

    weight_int8: torch.Tensor
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__(weight.shape[0])
        self.register_buffer("weight_int8", weight)
        self.register_buffer("scales", scales.to(torch.bfloat16))

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(rows, self.weight_int8, self.scales)


def int4_linear(weight: torch.Tensor) -> Int4Linear | None:
    """`weight` (out × in) packed four bits a weight, or None when it is not exactly `min +
    q * step` (q in 0..15) in every group of GROUP inputs."""
    out_features, in_features = weight.shape
    if in_features % GROUP:
        return None
    groups = weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    step = (high - low) / 15
    q = torch.round((groups - low[..., None]) / step.clamp_min(1e-30)[..., None]).clamp(0, 15)
    if not torch.equal(q * step[..., None] + low[..., None], groups):
        return None
    packed = torch._convert_weight_to_int4pack_for_cpu(
        q.to(torch.int32).reshape(out_features, in_features), 1)
    # The kernel computes (q - 8) * scale + zero; scales and zeros are laid out group-major.
    scales_and_zeros = torch.stack([step.t(), (low + 8 * step).t()], -1).contiguous()
    return Int4Linear(packed, scales_and_zeros, out_features)


def int8_linear(weight: torch.Tensor) -> Int8Linear:
    """`weight` as int8 with one scale per output row."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(1) / 127).clamp_min(1e-30)
    quantised = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return Int8Linear(quantised, scales)
