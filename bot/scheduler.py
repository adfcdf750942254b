"""The nightly retraining schedule: the bot starts `assistant tune nightly` as its own process.

A separate process keeps chatting responsive (training takes both cores for minutes) and keeps
training code out of the bot. The tuning run takes a file lock, so a scheduled run never
overlaps another one, whether that came from here, cron or a systemd timer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys

from telegram.ext import Application, ContextTypes

logger = logging.getLogger(__name__)


def parse_time(value: str) -> dt.time:
    """'03:30' → 03:30 in the machine's local time zone."""
    hours, minutes = (int(p) for p in value.split(":"))
    tz = dt.datetime.now().astimezone().tzinfo
    return dt.time(hours, minutes, tzinfo=tz)


def nightly_command() -> list[str]:
    return [sys.executable, "-m", "bot.cli", "tune", "nightly"]


async def run_nightly_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start the nightly run unless the previous one this bot started is still going."""
    running = context.application.bot_data.get("nightly_process")
    if running is not None and running.returncode is None:
        logger.warning("Nightly retraining from the previous schedule is still running; skipped")
        return
    process = await asyncio.create_subprocess_exec(*nightly_command())
    context.application.bot_data["nightly_process"] = process
    logger.info("Started nightly retraining (pid %s)", process.pid)


def schedule_nightly(application: Application, at: str) -> None:
    if not at:
        return
    when = parse_time(at)
    assert application.job_queue is not None, "needs python-telegram-bot[job-queue]"
    application.job_queue.run_daily(run_nightly_job, time=when, name="nightly-retraining")
    logger.info("Nightly retraining scheduled daily at %s local time", at)


async def run_retention_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """RETENTION_DAYS: purge old conversations (see `FeedbackService.purge`)."""
    from bot.storage.training import TrainingStore

    services = context.application.bot_data["services"]
    days = services.settings.retention_days
    try:
        trained = await asyncio.to_thread(TrainingStore(services.db).last_data_until)
        await asyncio.to_thread(services.feedback.purge, days, trained)
    except Exception:  # a failed purge is retried tomorrow; the bot keeps answering
        logger.exception("Retention purge failed")


def schedule_retention(application: Application, days: int | None) -> None:
    if not days:
        return
    assert application.job_queue is not None, "needs python-telegram-bot[job-queue]"
    application.job_queue.run_repeating(run_retention_job, interval=dt.timedelta(days=1),
                                        first=60, name="retention")
    logger.info("Conversations older than %d days are purged daily", days)
