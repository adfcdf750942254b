"""`assistant`: run the bot, chat in the terminal, curate knowledge, manage the database."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

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


def _kb(settings: Settings):  # type: ignore[no-untyped-def]
    from bot.wiring import build_services

    return build_services(settings, with_chat=False, seed=False)


def cmd_kb_add(settings: Settings, args: argparse.Namespace) -> int:
    from bot.services import UserError

    services, failed, results = _kb(settings), 0, []
    for path in args.files:
        try:
            result = services.knowledge.add_file(Path(path))
        except (UserError, OSError) as exc:
            failed += 1
            print(f"{path}: {exc}", file=sys.stderr)
            continue
        doc = result.document
        results.append({"file": path, "status": result.status.value, "id": doc.id,
                        "title": doc.title, "version": doc.version, "chunks": doc.chunk_count})
        if not args.json:
            print(f"{path}: {result.status.value} as #{doc.id} “{doc.title}” "
                  f"(v{doc.version}, {doc.chunk_count} chunks)")
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    services.close()
    return 1 if failed else 0


def cmd_kb_list(settings: Settings, args: argparse.Namespace) -> int:
    services = _kb(settings)
    docs = services.knowledge.list()
    if args.json:
        print(json.dumps([d.__dict__ for d in docs], ensure_ascii=False, indent=2))
    elif not docs:
        print("The knowledge base is empty. Add files with `assistant kb add FILE...`.")
    else:
        print(f"{'ID':>4}  {'VER':>3}  {'CHUNKS':>6}  TITLE")
        for d in docs:
            print(f"{d.id:>4}  {d.version:>3}  {d.chunk_count:>6}  {d.title}")
    services.close()
    return 0


def cmd_kb_remove(settings: Settings, args: argparse.Namespace) -> int:
    services = _kb(settings)
    removed = services.knowledge.remove(args.id)
    services.close()
    print(f"Removed document #{args.id}." if removed else f"No document #{args.id}.")
    return 0 if removed else 1


def cmd_kb_search(settings: Settings, args: argparse.Namespace) -> int:
    services = _kb(settings)
    hits = services.knowledge.search(args.query, args.k)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], ensure_ascii=False, indent=2))
    else:
        for h in hits:
            snippet = " ".join(h.text.split())[:100]
            print(f"{h.score:.3f}  #{h.document_id} {h.title} [{h.chunk_id}]  {snippet}")
        if not hits:
            print("No matches.")
    services.close()
    return 0


def cmd_kb_reindex(settings: Settings, args: argparse.Namespace) -> int:
    services = _kb(settings)
    chunks = services.knowledge.reindex()
    services.close()
    print(f"Rebuilt the index from SQL: {chunks} chunks.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="Run the Telegram bot (long polling)").set_defaults(func=cmd_run)
    sub.add_parser("chat", help="Chat in the terminal, no Telegram needed").set_defaults(
        func=cmd_chat)

    db = sub.add_parser("db", help="Database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="Migrate to the newest schema").set_defaults(func=cmd_db_upgrade)

    kb = sub.add_parser("kb", help="Knowledge base").add_subparsers(dest="kb_command",
                                                                    required=True)
    add = kb.add_parser("add", help="Add or replace documents (.txt, .md)")
    add.add_argument("files", nargs="+")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=cmd_kb_add)
    lst = kb.add_parser("list", help="List documents")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_kb_list)
    rm = kb.add_parser("remove", help="Remove a document")
    rm.add_argument("id", type=int)
    rm.set_defaults(func=cmd_kb_remove)
    search = kb.add_parser("search", help="Search the knowledge base")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_kb_search)
    kb.add_parser("reindex", help="Rebuild the Chroma index from SQL").set_defaults(
        func=cmd_kb_reindex)
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
