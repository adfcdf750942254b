"""A soak of the processes that share one data dir: the bot under load, `assistant kb add` and
`assistant tune nightly`, all at once, then a count of what was lost or doubled.

The bot runs here (real PTB over the emulator, real SQL, real Chroma, the real embedder; a
fake chat model, as generation is not what is soaked), with simulated users who ask, rate and
correct without pause. Beside it, one process after another adds or replaces documents from
the command line, and nightly runs follow each other. Used by tests/test_soak.py (short) and
bench/soak/run.py (minutes, written to bench/results/soak.json).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.config import Settings
from bot.storage.models import Correction, Document, Message, Rating, TrainingRun
from bot.telegram_app import build_application
from bot.wiring import build_services
from tests.botapi import BotAPIEmulator
from tests.fakes import FakeChatModel

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["How do I start a new conversation?", "What do you store about me?",
             "How do I rate an answer?", "Can I delete my data?", "What is the code word?"]
LOCKED = "database is locked"


@dataclass
class SoakReport:
    backend: str
    seconds: float = 0.0
    questions: int = 0
    answers: int = 0
    unanswered: int = 0
    ratings_pressed: int = 0
    ratings_lost: int = 0
    corrections_sent: int = 0
    corrections_stored: int = 0
    kb_adds: int = 0
    kb_add_failures: int = 0
    documents_not_found_by_bot: int = 0
    nightly_runs: int = 0
    nightly_failures: int = 0
    nightly_recorded: int = 0
    duplicate_questions: int = 0
    duplicate_answers: int = 0
    index_problems: int = 0
    locked_errors: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def clean(self) -> bool:
        return not (self.unanswered or self.ratings_lost or self.kb_add_failures
                    or self.nightly_failures or self.duplicate_questions
                    or self.duplicate_answers or self.index_problems or self.locked_errors
                    or self.documents_not_found_by_bot or self.errors
                    or self.corrections_stored != self.corrections_sent)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record)[:500])


async def _user(n: int, botapi: BotAPIEmulator, deadline: float, report: SoakReport,
                votes: dict[tuple[int, int], int]) -> None:
    user, rng = 9000 + n, random.Random(n)
    while time.monotonic() < deadline:
        before = len(botapi.sent_messages(user))
        botapi.send_text(user, rng.choice(QUESTIONS))
        report.questions += 1

        def answered() -> dict | None:
            sent = botapi.sent_messages(user)[before:]
            return next((m for m in sent if "reply_markup" in m), None)

        reply = await botapi.wait_for(answered, timeout=120, what=f"an answer to user {user}")
        report.answers += 1
        value = rng.choice((1, -1))
        acks = len(botapi.calls_to("answerCallbackQuery"))
        message_id = int(reply["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
                         .split(":")[1])
        botapi.press_button(user, reply, f"r:{message_id}:{value}")
        report.ratings_pressed += 1
        await botapi.wait_for(lambda: len(botapi.calls_to("answerCallbackQuery")) > acks,
                              timeout=60, what="the rating to be acknowledged")
        votes[(message_id, user)] = value
        if value == -1 and rng.random() < 0.5:
            prompt = await botapi.wait_for(
                lambda: next((m for m in botapi.sent_messages(user)[before:]
                              if "better answer" in m["text"].lower()), None),
                timeout=60, what="the correction prompt")
            sent = len(botapi.sent_messages(user))
            botapi.send_text(user, f"The right answer is number {report.corrections_sent}.",
                             reply_to=prompt)
            report.corrections_sent += 1
            await botapi.wait_for(lambda: len(botapi.sent_messages(user)) > sent, timeout=60,
                                  what="the correction to be acknowledged")


async def _process_loop(argv_for: Any, env: dict[str, str], deadline: float,
                        logs: Path, name: str) -> tuple[int, int]:
    """Run commands one after another until the deadline; (runs, failures)."""
    runs = failures = 0
    while time.monotonic() < deadline:
        log = logs / f"{name}-{runs:03d}.log"
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", *argv_for(runs), cwd=ROOT, env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
            code = await proc.wait()
        runs += 1
        failures += code != 0
    return runs, failures


async def run_soak(data_dir: Path, database_url: str, seconds: float, *, users: int = 6,
                   backend: str = "sqlite", nightly_args: tuple[str, ...] = (
                       "--min_rows", "1000000")) -> SoakReport:
    """Soak for `seconds`; the report counts every loss, duplicate and error."""
    from tests.conftest import MODEL_CACHE

    report = SoakReport(backend)
    docs_dir, logs = data_dir.parent / "soak-docs", data_dir.parent / "soak-logs"
    docs_dir.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    settings = Settings(data_dir=data_dir, database_url=database_url, model_cache_dir=MODEL_CACHE,
                        telegram_bot_token="123456:TEST-TOKEN", rate_limit_per_minute=0,
                        queue_max_per_user=4, _env_file=None)
    services = build_services(settings, model=FakeChatModel(), seed=True)
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), "DATABASE_URL": database_url,
           "MODEL_CACHE_DIR": str(MODEL_CACHE), "HF_HUB_OFFLINE": "1", "CHROMA_URL": ""}
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    botapi = BotAPIEmulator()
    await botapi.start()
    app = build_application(settings.model_copy(update={"telegram_api_url": botapi.url}),
                            services)
    await app.initialize()
    await app.post_init(app)  # type: ignore[misc]
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)  # type: ignore[union-attr]

    def kb_add(i: int) -> list[str]:
        # Mostly new documents; every third run replaces an earlier one (a new version).
        n = i // 3 if i % 3 == 2 else i
        word = f"zebra{i}quartz"
        (docs_dir / f"doc{n}.md").write_text(f"# Soak document {n}\n\nThe code word of soak "
                                             f"document {n} is {word}.")
        return ["kb", "add", str(docs_dir / f"doc{n}.md")]

    started = time.monotonic()
    deadline = started + seconds
    votes: dict[tuple[int, int], int] = {}
    try:
        results = await asyncio.gather(
            *[_user(n, botapi, deadline, report, votes) for n in range(users)],
            _process_loop(kb_add, env, deadline, logs, "kb-add"),
            _process_loop(lambda _: ["tune", "nightly", *nightly_args], env, deadline, logs,
                          "nightly"))
        (report.kb_adds, report.kb_add_failures), (report.nightly_runs,
                                                   report.nightly_failures) = results[-2:]
        await asyncio.sleep(1.0)  # the last acknowledgements' writes
    finally:
        await app.updater.stop()  # type: ignore[union-attr]
        await app.stop()
        await app.shutdown()
        await botapi.stop()
        logging.getLogger().removeHandler(errors)
    report.seconds = round(time.monotonic() - started, 1)

    with services.db.read() as s:
        stored = dict(((m, u), v) for m, u, v in s.execute(
            select(Rating.message_id, Rating.user_id, Rating.value)))
        report.ratings_lost = sum(stored.get(key) != value for key, value in votes.items())
        report.corrections_stored = s.scalar(select(func.count(Correction.id))) or 0
        report.duplicate_questions = len(s.execute(
            select(Message.telegram_message_id).where(Message.role == "user")
            .group_by(Message.conversation_id, Message.telegram_message_id)
            .having(func.count() > 1)).all())
        report.duplicate_answers = len(s.execute(
            select(Message.question_id).where(Message.role == "assistant")
            .group_by(Message.question_id).having(func.count() > 1)).all())
        answered = s.scalar(select(func.count(Message.id)).where(Message.role == "assistant")) or 0
        report.unanswered = report.questions - answered
        report.errors += [f"answered as a question: {text!r}" for text in s.scalars(
            select(Message.text).where(Message.role == "user",
                                       Message.text.startswith("The right answer")))]
        report.nightly_recorded = s.scalar(select(func.count(TrainingRun.id))) or 0
        current = list(s.scalars(select(Document)))
    report.index_problems = len(services.knowledge.check())
    # The bot's process finds, through a vector query, every chunk the CLI processes indexed
    # (each document's current version), not only the ones it indexed itself.
    everything = services.knowledge.index.search("code word of soak document",
                                                 services.knowledge.index.count())
    found = {(h.document_id, h.version) for h in everything}
    report.documents_not_found_by_bot = len(
        {(d.id, d.version) for d in current if d.source.startswith(str(docs_dir.resolve()))}
        - found)
    texts = [p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))]
    report.locked_errors = sum(t.count(LOCKED) for t in texts) + sum(
        LOCKED in m for m in errors.messages)
    report.errors += errors.messages[:20]
    services.close()
    return report
