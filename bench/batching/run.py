"""Does batching concurrent generations raise throughput on this machine?

Generates answers for the same prompts one at a time and as left-padded batches, greedy, with
the packaged model, and reports generated tokens per second for each batch size.

Usage: python bench/batching/run.py [--sizes 1 2 4 8] [--max-new-tokens 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bot.config import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from bot.model import HFChatModel  # noqa: E402
from bot.prompting import build_messages  # noqa: E402
from knowledge.index import Hit  # noqa: E402

QUESTIONS = ["How do I start a new conversation?", "How do I rate an answer?",
             "Who can add documents?", "What does the assistant store?",
             "How does it learn from ratings?", "Does it answer in groups?",
             "How do I rebuild the index?", "Which model does it use?"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batching.json")
    args = parser.parse_args()
    model = HFChatModel("", ROOT / ".cache" / "models", ROOT / ".cache" / "no-adapters")
    tok = model.tokenizer
    tok.padding_side = "left"
    context = (ROOT / "knowledge" / "samples" / "commands.md").read_text()
    prompts = [model.render(build_messages(DEFAULT_SYSTEM_PROMPT, [], q,
                                           [Hit("1", 1, 1, "Bot commands", context, 0.5)]))
               for q in QUESTIONS]
    results = []
    for size in args.sizes:
        batches = [prompts[i:i + size] for i in range(0, len(prompts), size)]
        started, tokens = time.perf_counter(), 0
        for batch in batches:
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = model.model.generate(**enc, max_new_tokens=args.max_new_tokens,
                                           min_new_tokens=args.max_new_tokens, do_sample=False,
                                           pad_token_id=tok.pad_token_id or tok.eos_token_id)
            tokens += (out.shape[1] - enc["input_ids"].shape[1]) * len(batch)
        seconds = time.perf_counter() - started
        results.append({"batch_size": size, "answers": len(prompts),
                        "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 1)})
        print(results[-1])
    report = {"results": results, "max_new_tokens": args.max_new_tokens,
              "torch_threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
