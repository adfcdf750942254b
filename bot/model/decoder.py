"""Writing one token for every chat in flight at once: a lean Llama decode step over a cache
that chats join and leave between tokens (continuous batching).

Why not transformers' `generate`: it runs a batch until its longest answer ends, so a question
that arrives a moment later waits for the whole batch; and one token goes through ~30 module
calls a layer, which on two CPU cores costs more than the arithmetic. Here one token of every
chat in flight is one pass over fused matrices (q/k/v as one, gate/up as one; 4-bit where the
weights are exactly 4-bit, `bot/model/int4.py`), and the key/value cache holds one row per chat,
each at its own length: a chat joins with its prompt already read and leaves when its answer
ends, without waiting for the others.

Only the Llama architecture (SmolLM2 and other Llama-like BASE_MODELs: no biases, plain RoPE);
`Decoder.supports` says so, and other models answer through `generate` (bot/model/local.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bot.model.int4 import Int8Linear, int4_linear, int8_linear


class Dense:
    """A fused matrix kept in the activations' dtype (weights that are not exactly 4-bit)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        return F.linear(rows, self.weight)


def own(weight: torch.Tensor) -> torch.Tensor:
    """A float32 copy of `weight` that shares nothing with the model: the model's tensors may
    be slices of the memory-mapped weights file, and holding one keeps the whole mapping
    resident after the model has moved to another dtype (~540 MB for the 135M model)."""
    return weight.detach().to(torch.float32, copy=True)


def fused(linears: list[Any], dtype: torch.dtype, int4: bool) -> Any:
    """The weights of `linears` stacked into one matrix: packed 4-bit when asked and exact,
    else dense. A dense matrix in the model's own dtype is shared with the model, whose
    matrices become views of it: the model reads prompts with them, and they are held once."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    packed = int4_linear(weight.float()) if int4 else None
    if packed is not None:
        return packed
    dense = Dense(weight.to(dtype))
    if dense.weight.dtype == linears[0].weight.dtype:
        start = 0
        for linear in linears:
            end = start + linear.weight.shape[0]
            linear.weight.data = dense.weight[start:end]
            start = end
    return dense


class Layer:
    def __init__(self, layer: Any, dtype: torch.dtype, int4: bool) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        self.attention_norm = own(layer.input_layernorm.weight)
        self.qkv = fused([attention.q_proj, attention.k_proj, attention.v_proj], dtype, int4)
        self.out = fused([attention.o_proj], dtype, int4)
        self.mlp_norm = own(layer.post_attention_layernorm.weight)
        self.gate_up = fused([mlp.gate_proj, mlp.up_proj], dtype, int4)
        self.down = fused([mlp.down_proj], dtype, int4)

    def matrices(self) -> list[Any]:
        return [self.qkv, self.out, self.gate_up, self.down]


class Slots:
    """The key/value cache of the chats in flight: row r holds chat r's first `lengths[r]`
    positions, in every layer. Rows stay packed at the front (a leaving chat's row is taken by
    the last one), and the cache doubles its length when a chat outgrows it."""

    LENGTH = 512  # positions a row holds at first

    def __init__(self, decoder: Decoder, rows: int, length: int = LENGTH) -> None:
        self.decoder = decoder
        shape = (rows, decoder.kv_heads, length, decoder.head_dim)
        self.keys = [decoder.empty(shape) for _ in decoder.layers]
        self.values = [decoder.empty(shape) for _ in decoder.layers]
        self.lengths: list[int] = []

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def _fit(self, length: int) -> None:
        if length <= self.capacity:
            return
        size = self.capacity
        while size < length:
            size *= 2
        for cache in (self.keys, self.values):
            for i, old in enumerate(cache):
                new = self.decoder.empty((old.shape[0], old.shape[1], size, old.shape[3]))
                new[:, :, : old.shape[2]] = old
                cache[i] = new

    def add(self, cache: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> int:
        """A new chat's row, from its prompt's cache (per layer, keys and values of shape
        [1, kv heads, length, head dim]); returns the row."""
        if len(self.lengths) == self.keys[0].shape[0]:
            raise RuntimeError("every row is taken")
        self._fit(length + 1)
        row = len(self.lengths)
        for i, (keys, values) in enumerate(cache):
            self.keys[i][row, :, :length] = keys[0, :, :length]
            self.values[i][row, :, :length] = values[0, :, :length]
        self.lengths.append(length)
        return row

    def remove(self, row: int) -> None:
        """Free `row`; the last row moves into it."""
        last = len(self.lengths) - 1
        if row != last:
            n = self.lengths[last]
            for cache in (self.keys, self.values):
                for layer in cache:
                    layer[row, :, :n] = layer[last, :, :n]
            self.lengths[row] = n
        self.lengths.pop()


class Decoder:
    """The weights that write answers, laid out for `step`. Where they keep the model's dtype
    they are shared with `model` (its tensors become views of the decoder's), so nothing is
    held twice; the model is otherwise unchanged."""

    def __init__(self, model: Any, *, dtype: torch.dtype, int4: bool) -> None:
        config = model.config
        self.dtype = torch.bfloat16 if int4 else dtype
        self.device = model.device
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.layers = [Layer(layer, self.dtype, int4) for layer in model.model.layers]
        self.norm = own(model.model.norm.weight)
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        self.embeddings = embeddings.detach().to(self.dtype, copy=True)
        self.head: Dense | Int8Linear
        if int4:
            self.head = int8_linear(head)
        elif head is embeddings:  # tied, as in SmolLM2
            self.head = Dense(self.embeddings)
        else:
            self.head = Dense(head.detach().to(self.dtype, copy=True))
            if self.head.weight.dtype == head.dtype:
                head.data = self.head.weight
        if self.embeddings.dtype == embeddings.dtype:
            embeddings.data = self.embeddings  # shared with the model, as the matrices are
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.detach().float()
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether `model` is a Llama this step computes exactly as transformers does (a plain
        model: a PEFT model still wrapped, e.g. with a prompt-tuning adapter's virtual tokens,
        is not)."""
        if hasattr(model, "peft_config"):
            return False
        config = getattr(model, "config", None)
        rope = getattr(config, "rope_parameters", None) or {}
        return (getattr(config, "model_type", None) == "llama"
                and not getattr(config, "attention_bias", True)
                and not getattr(config, "mlp_bias", True)
                and rope.get("rope_type", "default") == "default"
                and getattr(config, "hidden_act", None) == "silu"
                and isinstance(getattr(model, "lm_head", None), torch.nn.Linear))

    def empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def packed(self) -> int:
        """How many of the fused matrices are 4-bit (4 a layer: qkv, out, gate/up, down)."""
        return sum(not isinstance(m, Dense) for layer in self.layers for m in layer.matrices())

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).to(self.dtype)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin

    def step(self, slots: Slots, tokens: list[int]) -> torch.Tensor:
        """Feed each row its next token (row r at position `slots.lengths[r]`); the logits of
        what follows, float32 [rows, vocabulary]. Each row's cache grows by one position."""
        rows = len(tokens)
        device = self.device
        positions = torch.tensor(slots.lengths, device=device)
        slots._fit(int(positions.max()) + 1)
        index = torch.arange(rows, device=device)
        freqs = positions[:, None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), -1)
        cos = (angles.cos() * self.rope_scale).to(self.dtype)[:, None, :]
        sin = (angles.sin() * self.rope_scale).to(self.dtype)[:, None, :]
        width = int(positions.max()) + 1
        mask = None
        if rows > 1 and min(slots.lengths) + 1 < width:
            mask = (torch.arange(width, device=device)[None, :]
                    <= positions[:, None])[:, None, None, :]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        x = self.embeddings[torch.tensor(tokens, device=device)]
        for layer, keys, values in zip(self.layers, slots.keys, slots.values, strict=True):
            qkv = layer.qkv.matmul(self._norm(x, layer.attention_norm))
            qkv = qkv.view(rows, heads + 2 * kv_heads, dim)
            qk = self._rotate(qkv[:, : heads + kv_heads], cos, sin)
            keys[index, :, positions] = qk[:, heads:]
            values[index, :, positions] = qkv[:, heads + kv_heads:]
            attended = F.scaled_dot_product_attention(
                qk[:, :heads, None], keys[:rows, :, :width], values[:rows, :, :width],
                attn_mask=mask, enable_gqa=True)
            x = x + layer.out.matmul(attended.reshape(rows, heads * dim))
            gate_up = layer.gate_up.matmul(self._norm(x, layer.mlp_norm))
            half = gate_up.shape[-1] // 2
            x = x + layer.down.matmul(F.silu(gate_up[:, :half]) * gate_up[:, half:])
        for row in range(rows):
            slots.lengths[row] += 1
        return self.head.matmul(self._norm(x, self.norm)).float()
