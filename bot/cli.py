"""`assistant`: run the bot, chat in the terminal, curate knowledge, manage the database."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from bot import cli_kb
from bot.config import Settings

logger = logging.getLogger(__name__)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
    for noisy in ("httpx", "httpcore", "chromadb", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.telegram_bot_token:
        print("TELEGRAM_BOT_TOKEN is not set: get one from @BotFather, or try `assistant chat`.",
              file=sys.stderr)
        return 2
    from bot.telegram_app import run_polling
    from bot.wiring import build_services

    services = build_services(settings)
    try:
        run_polling(settings, services)
    finally:
        services.close()
    return 0


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from bot.terminal import chat_loop
    from bot.wiring import build_services

    services = build_services(settings)
    try:
        return chat_loop(services, sys.stdin, sys.stdout)
    finally:
        services.close()


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from bot.wiring import open_database

    open_database(settings).dispose()
    print("Database is at the newest schema.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="Run the Telegram bot (long polling)").set_defaults(func=cmd_run)
    sub.add_parser("chat", help="Chat in the terminal, no Telegram needed").set_defaults(
        func=cmd_chat)

    db = sub.add_parser("db", help="Database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="Migrate to the newest schema").set_defaults(func=cmd_db_upgrade)

    cli_kb.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"Configuration error:\n{exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
