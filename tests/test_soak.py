"""The bot under load, `assistant kb add` and `assistant tune nightly` at once on one data dir,
on SQLite and on PostgreSQL: nothing lost, nothing doubled, no "database is locked".
`bench/soak/run.py` runs the same soak for minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak import run_soak

pytestmark = pytest.mark.slow

SECONDS = 40


def assert_clean(report) -> None:  # type: ignore[no-untyped-def]
    summary = report.as_dict()
    assert report.questions >= 20 and report.ratings_pressed >= 20, summary
    assert report.kb_adds >= 3 and report.nightly_runs >= 1, summary
    assert report.nightly_recorded == report.nightly_runs, summary  # each run left its record
    assert report.clean, summary


async def test_soak_on_sqlite(tmp_path: Path) -> None:
    assert_clean(await run_soak(tmp_path / "data", "", SECONDS))


async def test_soak_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    from tests.postgres import fresh_database

    assert_clean(await run_soak(tmp_path / "data", fresh_database(postgres_url), SECONDS,
                                backend="postgresql"))
