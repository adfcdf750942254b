"""Start time of `assistant` commands: best of three wall times, in fresh interpreters.

Usage: python bench/cli/run.py [--base DIR]   (DIR: another checkout, e.g. a `git worktree`
of an older commit, timed in the same run through PYTHONPATH)
Writes bench/results/cli.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [["kb", "--help"], ["kb", "list"], ["kb", "search", "what is the cat called"],
            ["tune", "list"]]


def timings(code_dir: Path, work: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code_dir), "ASSISTANT_DATA_DIR": str(work / "data"),
           "MODEL_CACHE_DIR": str(ROOT / ".cache" / "models"), "HF_HUB_OFFLINE": "1"}
    for var in ("DATABASE_URL", "CHROMA_URL"):
        env.pop(var, None)
    doc = work / "cat.md"
    doc.write_text("# Cats\n\nThe office cat is called Miso and sleeps on the printer.\n")
    cli = [sys.executable, "-m", "bot.cli"]
    subprocess.run([*cli, "kb", "add", str(doc)], env=env, cwd=work, check=True,
                   capture_output=True)
    out = {}
    for command in COMMANDS:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([*cli, *command], env=env, cwd=work, capture_output=True)
            best = min(best, time.perf_counter() - started)
        out[" ".join(command)] = round(best, 2)
        print(f"{code_dir}: {' '.join(command)}: {best:.2f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout to time in the same run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli.json")
    args = parser.parse_args()
    result: dict = {"machine": f"{os.cpu_count()} CPUs"}
    for label, code in (("base", args.base), ("now", ROOT)):
        if code is not None:
            with tempfile.TemporaryDirectory() as work:
                result[label] = timings(code.resolve(), Path(work))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
