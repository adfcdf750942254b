"""Start time of `assistant` commands, each in a fresh interpreter.

Best and median of --runs wall times, the checkouts taking turns run by run (this machine's
speed drifts over minutes), on a knowledge base of one document; then `kb search` on one of
about 80 documents (this repository's Python and Markdown files, ~1 MB of text), since what a
search costs beyond start-up grows with the knowledge base.

Usage: python bench/cli/run.py [--base DIR] [--no-large] [--runs N]
(DIR: another checkout, e.g. a `git worktree` of an older commit, timed in the same run through
PYTHONPATH)
Writes bench/results/cli.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEARCH = ["kb", "search", "what is the cat called"]
COMMANDS = [["kb", "--help"], ["kb", "list"], ["kb", "show", "1"], SEARCH, ["tune", "list"]]
LARGE_SEARCH = ["kb", "search", "how is a promoted adapter rolled back"]


def large_documents(tmp: Path) -> list[Path]:
    """This repository's Python and Markdown files, as text documents."""
    out = tmp / "docs"
    out.mkdir()
    files = [f for d in ("bot", "knowledge", "tuning", "bench") for f in (ROOT / d).rglob("*.py")]
    files.append(ROOT / "README.md")
    docs = []
    for i, f in enumerate(sorted(files)):
        doc = out / f"{i:03d}-{f.stem}.txt"
        doc.write_text(f"{f.relative_to(ROOT)}\n\n{f.read_text()}")
        docs.append(doc)
    return docs


@dataclass
class Checkout:
    """One checkout's code and a data dir of its own (one document, then the large set)."""

    code: Path
    work: Path

    def env(self, data: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(self.code),
               "ASSISTANT_DATA_DIR": str(self.work / data),
               "MODEL_CACHE_DIR": str(ROOT / ".cache" / "models"), "HF_HUB_OFFLINE": "1"}
        for var in ("DATABASE_URL", "CHROMA_URL"):
            env.pop(var, None)
        return env

    def run(self, command: list[str], data: str = "data", check: bool = False) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bot.cli", *command], env=self.env(data),
                       cwd=self.work, check=check, capture_output=True)
        return time.perf_counter() - started


def prepare(checkout: Checkout, large: list[Path]) -> None:
    doc = checkout.work / "cat.md"
    doc.write_text("# Cats\n\nThe office cat is called Miso and sleeps on the printer.\n")
    checkout.run(["kb", "add", str(doc)], check=True)
    checkout.run(SEARCH, check=True)  # the first search after a change may count or copy anew
    if large:
        checkout.run(["kb", "add", str(doc), *map(str, large)], "large", check=True)
        checkout.run(LARGE_SEARCH, "large", check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout to time in the same run")
    parser.add_argument("--no-large", action="store_true",
                        help="skip the search on a ~100-document knowledge base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {}
        for label, code in (("base", args.base), ("now", ROOT)):
            if code is not None:
                work = Path(tmp) / label
                work.mkdir()
                checkouts[label] = Checkout(code.resolve(), work)
        large = [] if args.no_large else large_documents(Path(tmp))
        for checkout in checkouts.values():
            prepare(checkout, large)
        cases = [(" ".join(c), c, "data") for c in COMMANDS]
        if large:
            cases.append((f"{' '.join(LARGE_SEARCH)} ({len(large) + 1} documents)",
                          LARGE_SEARCH, "large"))
        # Run by run, the checkouts take turns: this machine's speed drifts over minutes.
        times: dict[str, dict[str, list[float]]] = {label: {} for label in checkouts}
        for name, command, data in cases:
            for _ in range(args.runs):
                for label, checkout in checkouts.items():
                    times[label].setdefault(name, []).append(checkout.run(command, data))
            print(name + ": " + ", ".join(
                f"{label} best {min(times[label][name]):.2f} s, median "
                f"{statistics.median(times[label][name]):.2f} s" for label in checkouts),
                flush=True)
    result: dict = {"machine": f"{os.cpu_count()} CPUs", "runs": args.runs,
                    "base_code": str(args.base) if args.base else None}
    for label in checkouts:
        result[label] = {name: round(min(t), 2) for name, t in times[label].items()}
        result[label + "_median"] = {name: round(statistics.median(t), 2)
                                     for name, t in times[label].items()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
