"""Measuring an adapter (or the base model) the same way every time.

* `answer_loss`: mean per-token loss of reference answers given their prompts (lower is better).
* `preference_accuracy`: over pairs of a 👍 answer and a 👎 answer, how often the model gives the
  👍 one the higher mean log-probability (higher is better).
* `golden_checks`: greedy answers to the frozen golden set: grounded questions must mention an
  expected fact, unanswerable ones must say they don't know (pass rate, higher is better).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "data" / "golden.jsonl"
IDK = re.compile(r"(don't|do not|can't|cannot) (know|find|say)|no information|not (in|covered)|"
                 r"nothing (in|about)|not sure|isn't (in|covered)|doesn't (say|mention)|"
                 r"does not (say|mention)|no (mention|details)", re.I)


@dataclass
class Metrics:
    golden_loss: float
    golden_pass: float
    heldout_loss: float | None
    preference_accuracy: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _completion_logprobs(model, tokenizer, prompt: str, completion: str) -> list[float]:  # type: ignore[no-untyped-def]
    import torch

    p = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    c = tokenizer(completion, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([p, c], dim=1)[:, -1024:]
    n = min(c.shape[1], ids.shape[1] - 1)
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device)).logits[0, -n - 1:-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.gather(1, ids[0, -n:].to(model.device).unsqueeze(1)).squeeze(1).tolist()


def answer_loss(model, tokenizer, rows: list[dict]) -> float:  # type: ignore[no-untyped-def]
    """Mean negative log-likelihood per answer token."""
    total, count = 0.0, 0
    for row in rows:
        lps = _completion_logprobs(model, tokenizer, str(row["prompt"]), str(row["completion"]))
        total -= sum(lps)
        count += len(lps)
    return total / count if count else float("nan")


def preference_accuracy(model, tokenizer, kto_rows: list[dict], max_pairs: int = 200,  # type: ignore[no-untyped-def]
                        seed: int = 0) -> float | None:
    """Share of (👍, 👎) pairs where the 👍 answer is the more likely one; None without pairs."""
    liked = [r for r in kto_rows if r["label"]]
    disliked = [r for r in kto_rows if not r["label"]]
    if not liked or not disliked:
        return None
    pairs = [(a, b) for a in liked for b in disliked]
    random.Random(seed).shuffle(pairs)
    cache: dict[int, float] = {}

    def score(row: dict) -> float:
        key = id(row)
        if key not in cache:
            lps = _completion_logprobs(model, tokenizer, str(row["prompt"]), str(row["completion"]))
            cache[key] = sum(lps) / max(len(lps), 1)
        return cache[key]

    pairs = pairs[:max_pairs]
    return sum(score(a) > score(b) for a, b in pairs) / len(pairs)


def load_golden(path: Path = GOLDEN) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def golden_checks(model, tokenizer, golden: list[dict], render, max_new_tokens: int = 48) -> float:  # type: ignore[no-untyped-def]
    """Pass rate of greedy answers on the golden set (`render` turns messages into a prompt);
    generated as one left-padded batch."""
    import torch

    if not golden:
        return 0.0
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        batch = tokenizer([render(item["messages"]) for item in golden], return_tensors="pt",
                          padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 no_repeat_ngram_size=4, pad_token_id=pad)
    finally:
        tokenizer.padding_side = side
    passed = 0
    for row, item in enumerate(golden):
        answer = tokenizer.decode(out[row, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        if item["expect"] == "idk":
            passed += bool(IDK.search(answer))
        else:
            passed += any(k.lower() in answer.lower() for k in item["keywords"]) \
                and not IDK.search(answer)
    return passed / len(golden)
