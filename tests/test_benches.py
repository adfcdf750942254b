"""Every benchmark command still starts: a rename elsewhere must not leave `make bench-…`
failing on import (bench/nightly once imported question lists another benchmark had dropped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(ROOT.glob("bench/*/run.py"))


def test_every_benchmark_is_found() -> None:
    assert {p.parent.name for p in BENCHES} >= {"answers", "nightly", "learning_loop",
                                                 "retrieval", "serving", "cli"}


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.parent.name)
def test_the_benchmark_imports_and_explains_itself(script: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
