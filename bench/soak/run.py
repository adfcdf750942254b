"""Soak: the bot under load, `assistant kb add` and `assistant tune nightly` at once on one
data dir, on SQLite and on PostgreSQL, for minutes; counts losses, duplicates
and "database is locked". Writes bench/results/soak.json.

    python bench/soak/run.py [--minutes 3] [--users 6] [--backends sqlite,postgresql] [--train]

PostgreSQL comes from Debian's `postgresql` package (a private cluster is started).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.postgres import fresh_database, postgres_cluster  # noqa: E402
from tests.soak import run_soak  # noqa: E402

# By default each nightly run does its database work (reads the ratings, recomputes the
# retrieval boosts, records the run) and stops short of training, so many runs fit in the soak;
# --train trains for real (a few steps), which on 2 busy cores takes over 5 minutes a run.
NIGHTLY = ("--min_rows", "1000000")
TRAINING = ("--max_steps", "2", "--batch_size", "4", "--max_length", "256", "--min_rows", "8",
            "--eval_every", "2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--train", action="store_true", help="nightly runs train for real")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    nightly = TRAINING if args.train else NIGHTLY
    rows = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            if backend == "postgresql":
                with postgres_cluster() as url:
                    report = asyncio.run(run_soak(data, fresh_database(url), args.minutes * 60,
                                                  users=args.users, backend=backend,
                                                  nightly_args=nightly))
            else:
                report = asyncio.run(run_soak(data, "", args.minutes * 60, users=args.users,
                                              backend=backend, nightly_args=nightly))
        row = {**report.as_dict(), "clean": report.clean}
        rows.append(row)
        print(json.dumps(row, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"),
                                    "machine": f"{platform.machine()}, {platform.processor()}",
                                    "minutes": args.minutes, "users": args.users,
                                    "nightly_args": nightly, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["clean"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
