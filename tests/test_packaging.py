"""A normal (non-editable) install carries its migrations: `assistant db upgrade` works from
the wheel, far from the source tree."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel


def test_db_upgrade_from_the_built_wheel(tmp_path: Path) -> None:
    dist, site, source = tmp_path / "dist", tmp_path / "site", tmp_path / "source"
    # Built from a copy: setuptools writes build/ and *.egg-info/ beside the sources.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "data", "build", "*.egg-info", "__pycache__", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(source)], check=True, capture_output=True)
    [wheel] = dist.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    assert (site / "bot" / "migrations" / "versions" / "0001_initial.py").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "ASSISTANT_DATA_DIR": str(work / "data")}
    env.pop("DATABASE_URL", None)
    code = ("import sys, bot; assert bot.__file__.startswith(sys.argv[1]), bot.__file__; "
            "from bot.cli import main; sys.argv = ['assistant', 'db', 'upgrade']; "
            "raise SystemExit(main())")
    done = subprocess.run([sys.executable, "-c", code, str(site)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(work / "data" / "assistant.db") as conn:
        [(version,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    heads = sorted(p.name.split("_")[0] for p in (ROOT / "alembic" / "versions").glob("0*.py"))
    assert version == heads[-1]
