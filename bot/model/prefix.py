"""Reading prompts into the key/value cache: the start every prompt shares only once
(`PrefixCache`), and optionally in another precision than the answer is written in
(`read_prompt`).

Every chat begins with the same system prompt and the same line introducing the excerpts (87
of the ~230 tokens of a typical answer prompt). On a CPU, reading the prompt is most of the wait
before the first word, and it is plain arithmetic on every token, so that shared start is read
once, kept as a key/value cache, and each request reads only what follows it.

The shared start is learned, not configured: the longest run of tokens a prompt has in common
with the one before it (at least `min_tokens`). A batch puts the shared start first and pads
between it and each row's own part: `[start][pads][row]`, the pads masked out, so the rows
continue from one copy of the cache and their positions stay those of an unpadded prompt.
"""

from __future__ import annotations

import copy
from typing import Any


def shared_length(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` have in common from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """The key/value cache of the prompt start the latest prompts share (not thread-safe: the
    model lock serialises its users)."""

    def __init__(self, min_tokens: int = 24) -> None:
        self.min_tokens = min_tokens
        self.ids: list[int] = []
        self._cache: Any = None
        self._last: list[int] = []
        self.hits = 0

    def clear(self) -> None:
        """Forget it (the model changed: its cache is for other weights)."""
        self.ids, self._cache, self._last = [], None, []

    def _usable(self, rows: list[list[int]]) -> bool:
        n = len(self.ids)
        return self._cache is not None and all(len(r) > n and r[:n] == self.ids for r in rows)

    def _learn(self, model: Any, rows: list[list[int]]) -> None:
        """Cache the start these rows (and the prompt before them) share, if it is long enough."""
        import torch
        from transformers import DynamicCache

        others = rows[1:] + ([self._last] if self._last else [])
        self._last = rows[-1]
        if not others:
            return
        shared = rows[0][: min(len(r) for r in rows) - 1]  # each row keeps a token of its own
        for other in others:
            shared = shared[: shared_length(shared, other)]
        if len(shared) < self.min_tokens or shared == self.ids:
            return
        with torch.inference_mode():
            cache = DynamicCache()
            model(input_ids=torch.tensor([shared], device=model.device),
                  cache=cache, use_cache=True, logits_to_keep=1)
        self.ids, self._cache = shared, cache

    def inputs(self, model: Any, rows: list[list[int]], pad_id: int) -> dict[str, Any]:
        """`generate` keyword arguments for `rows`: continuing from the cached start when every
        row begins with it, else plain left-padded input."""
        import torch

        if not self._usable(rows):
            self._learn(model, rows)
        n = len(self.ids) if self._usable(rows) else 0
        own = [r[n:] for r in rows]
        width = max(map(len, own))
        ids = [self.ids + [pad_id] * (width - len(o)) + o for o in own]
        mask = [[1] * n + [0] * (width - len(o)) + [1] * len(o) for o in own]
        inputs: dict[str, Any] = {"input_ids": torch.tensor(ids),
                                  "attention_mask": torch.tensor(mask)}
        if n:
            cache = copy.deepcopy(self._cache)
            if len(rows) > 1:
                cache.batch_repeat_interleave(len(rows))
            inputs["cache"] = cache
            self.hits += 1
        return inputs


def read_prompt(model: Any, inputs: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Read all of each row but its last token with `model` into the key/value cache, kept in
    `dtype`; `generate` on another copy of the weights then continues from the last token.

    This is how the prompt is read in float32 and the answer written in bfloat16 on CPUs whose
    bfloat16 matrix products are slow (no AVX512-BF16/AMX): reading is arithmetic, where
    float32 is fastest there; writing fetches every weight for every token, where half the
    bytes is nearly twice the speed. Positions come from the attention mask, as `generate`
    computes them, so left-padded rows read as if unpadded."""
    import torch
    from transformers import DynamicCache

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    cache = inputs.get("cache") or DynamicCache()
    start = cache.get_seq_length()
    if ids.shape[1] - 1 > start:
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            model(input_ids=ids[:, start:-1], attention_mask=mask[:, :-1],
                  position_ids=positions[:, start:-1], cache=cache, use_cache=True,
                  logits_to_keep=1)
    layer: Any
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
    return {**inputs, "cache": cache}
