import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot import scheduler
from bot.config import Settings


def test_bad_schedule_time_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("TUNE_NIGHTLY_AT", "25:99")
    with pytest.raises(ValidationError, match="like 03:30"):
        Settings()


async def test_bot_schedules_nightly_run_as_a_separate_process(
        settings: Settings, services, botapi, tmp_path: Path, monkeypatch) -> None:
    from bot.telegram_app import build_application

    marker = tmp_path / "ran"
    monkeypatch.setattr(scheduler, "nightly_command", lambda: [
        sys.executable, "-c", f"import os; open({str(marker)!r}, 'a').write(str(os.getpid()))"])
    app = build_application(settings.model_copy(update={"telegram_api_url": botapi.url,
                                                        "tune_nightly_at": "03:30"}), services)
    [job] = app.job_queue.jobs()
    assert job.name == "nightly-retraining"
    assert (job.trigger.fields[5].expressions[0].first, job.trigger.fields[6].expressions[0].first) \
        == (3, 30)  # hour, minute
    await app.initialize()
    context = type("Ctx", (), {"application": app})()
    await scheduler.run_nightly_job(context)
    process = app.bot_data["nightly_process"]
    await process.wait()
    assert marker.read_text() == str(process.pid)  # ran in its own process, not the bot's
    await app.shutdown()
