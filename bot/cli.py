"""`assistant`: run the bot, chat in the terminal, curate knowledge, manage the database."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from pydantic import ValidationError

from bot import cli_kb
from bot.config import Settings
from bot.services import UserError

logger = logging.getLogger(__name__)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
    for noisy in ("httpx", "httpcore", "chromadb", "sentence_transformers", "transformers",
                  "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.telegram_bot_token:
        print("TELEGRAM_BOT_TOKEN is not set: get one from @BotFather, or try `assistant chat`.",
              file=sys.stderr)
        return 2
    if args.webhook_url and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", args.webhook_secret or ""):
        print("--webhook-url needs --webhook-secret: 1-256 characters of A-Z, a-z, 0-9, _ and -. "
              "Telegram sends it with every update, so nobody else can post updates to the bot.",
              file=sys.stderr)
        return 2
    from bot.telegram_app import run_polling, run_webhook
    from bot.wiring import build_services

    services = build_services(settings)
    try:
        if args.webhook_url:
            run_webhook(settings, services, args.webhook_url, args.webhook_secret, args.listen,
                        args.port)
        else:
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


def cmd_db_backup(settings: Settings, args: argparse.Namespace) -> int:
    from bot.storage.backup import BackupError, backup

    try:
        report = backup(settings.sqlalchemy_url, settings.adapters_dir, args.path)
    except BackupError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Backed up the database ({report.database_bytes:,} bytes) and "
          f"{len(report.adapters)} adapter version(s) (serving: "
          f"{report.current_adapter or 'base model'}) to {report.path}")
    return 0


def cmd_db_restore(settings: Settings, args: argparse.Namespace) -> int:
    from bot.storage.backup import BackupError, restore
    from bot.wiring import build_services

    try:
        manifest = restore(args.path, settings.sqlalchemy_url, settings.adapters_dir, args.force)
    except BackupError as exc:
        print(exc, file=sys.stderr)
        return 1
    services = build_services(settings, with_chat=False, seed=False)  # migrates if older
    try:
        chunks = services.knowledge.reindex(actor="restore")
    finally:
        services.close()
    print(f"Restored the backup of {manifest.get('created_at', '?')} and rebuilt the index "
          f"({chunks} chunks); serving adapter: {manifest.get('current_adapter') or 'base model'}")
    return 0


def cmd_db_purge(settings: Settings, args: argparse.Namespace) -> int:
    from bot.services.feedback import FeedbackService
    from bot.storage.store import Store
    from bot.storage.training import TrainingStore
    from bot.wiring import open_database

    days = args.days or settings.retention_days
    if not days:
        print("Give --days N or set RETENTION_DAYS.", file=sys.stderr)
        return 2
    db = open_database(settings)
    try:
        counts = FeedbackService(Store(db)).purge(days, TrainingStore(db).last_data_until())
    finally:
        db.dispose()
    print(f"Purged conversations older than {days} days: " +
          ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Run the Telegram bot (long polling, or a webhook)")
    run.add_argument("--webhook-url", help="Public HTTPS URL Telegram should post updates to")
    run.add_argument("--webhook-secret", help="Secret Telegram sends in every webhook request")
    run.add_argument("--listen", default="0.0.0.0", help="Webhook server address")
    run.add_argument("--port", type=int, default=8443, help="Webhook server port")
    run.set_defaults(func=cmd_run)
    sub.add_parser("chat", help="Chat in the terminal, no Telegram needed").set_defaults(
        func=cmd_chat)

    db = sub.add_parser("db", help="Database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="Migrate to the newest schema").set_defaults(func=cmd_db_upgrade)
    p = db.add_parser("backup", help="Copy the database (online) and the adapters to a new "
                                     "directory; PostgreSQL: prints the pg_dump command")
    p.add_argument("path", type=Path)
    p.set_defaults(func=cmd_db_backup)
    p = db.add_parser("purge", help="Delete conversations older than --days (default "
                      "RETENTION_DAYS), keeping rated answers a trained adapter learnt from")
    p.add_argument("--days", type=int)
    p.set_defaults(func=cmd_db_purge)
    p = db.add_parser("restore", help="Put a backup in place and rebuild the knowledge index")
    p.add_argument("path", type=Path)
    p.add_argument("--force", action="store_true", help="Replace an existing database")
    p.set_defaults(func=cmd_db_restore)

    cli_kb.register(sub)
    # The command line is the composition root; the bot's runtime never imports tuning.
    from tuning import cli as tuning_cli

    tuning_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "options"):  # a tuning command: its knobs are parsed when it runs
        args.options = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"Configuration error:\n{exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    try:
        return args.func(settings, args)
    except UserError as exc:  # refused with a reason: the reason, not a traceback
        print(str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
