"""`assistant kb ...`: curate the knowledge base from the command line.

Readable tables by default, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.services import UserError

if TYPE_CHECKING:  # storage and knowledge load when a command runs, not for `--help`
    from bot.wiring import Services


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except Exception:  # no user name (e.g. a container with an unknown uid)
        return "cli"


def _open(settings: Settings) -> Services:
    from bot.wiring import build_services

    return build_services(settings, with_chat=False, seed=False, short_lived=True)


def _json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def cmd_add(svc: Services, args: argparse.Namespace) -> int:
    """Add files; exits 1 when any of them failed, after adding all the others."""
    failed, results = 0, list[dict[str, Any]]()
    for path, result in svc.knowledge.add_files([Path(n) for n in args.files], actor=_actor()):
        name = str(path)
        if isinstance(result, UserError):
            failed += 1
            print(f"{name}: {result}", file=sys.stderr)
            if args.json:
                results.append({"file": name, "status": "failed", "error": str(result)})
            continue
        doc = result.document
        results.append({"file": name, "status": result.status.value, "id": doc.id,
                        "title": doc.title, "version": doc.version, "chunks": doc.chunk_count})
        if not args.json:
            print(f"{name}: {result.status.value} as #{doc.id} “{doc.title}” "
                  f"(v{doc.version}, {doc.chunk_count} chunks)")
    if args.json:
        _json(results)
    elif failed:
        print(f"{failed} of {len(args.files)} files failed; the others were added.",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_list(svc: Services, args: argparse.Namespace) -> int:
    total = svc.knowledge.count()
    docs = svc.knowledge.list_documents(offset=(args.page - 1) * args.per_page, limit=args.per_page)
    if args.json:
        _json([asdict(d) for d in docs])
        return 0
    if not total:
        print("The knowledge base is empty. Add files with `assistant kb add FILE...`.")
        return 0
    print(f"{'ID':>5}  {'VER':>3}  {'CHUNKS':>6}  {'CHARS':>7}  TITLE")
    for d in docs:
        print(f"{d.id:>5}  {d.version:>3}  {d.chunk_count:>6}  {d.size:>7}  {d.title}")
    pages = (total + args.per_page - 1) // args.per_page
    print(f"Page {args.page} of {pages} ({total} documents).")
    return 0


def cmd_show(svc: Services, args: argparse.Namespace) -> int:
    found = svc.knowledge.show(args.id)
    if found is None:
        print(f"No document #{args.id}.", file=sys.stderr)
        return 1
    info, text = found
    if args.json:
        _json({**asdict(info), "text": text})
        return 0
    print(f"#{info.id} {info.title}\nsource:  {info.source}\nversion: {info.version}\n"
          f"chunks:  {info.chunk_count}\nchars:   {info.size}\nadded:   {info.created_at:%Y-%m-%d %H:%M}"
          f" by {info.added_by or 'cli/system'}\n")
    print("\n".join(text.splitlines()[: args.lines]))
    return 0


def cmd_remove(svc: Services, args: argparse.Namespace) -> int:
    info = svc.knowledge.remove(args.id, actor=_actor())
    if info is None:
        print(f"No document #{args.id}.", file=sys.stderr)
        return 1
    print(f"Removed #{info.id} “{info.title}”.")
    return 0


def cmd_search(svc: Services, args: argparse.Namespace) -> int:
    hits = svc.knowledge.search(args.query, args.k)
    if args.json:
        sources = {d.id: d.source for d in svc.knowledge.list_documents()}
        _json([{"document_id": h.document_id, "title": h.title,
                "source": sources.get(h.document_id), "chunk_id": h.chunk_id, "chunk": h.text,
                "score": round(h.score, 4)} for h in hits])
        return 0
    for h in hits:
        snippet = " ".join(h.text.split())[:90]
        print(f"{h.score:.3f}  #{h.document_id} {h.title} [{h.chunk_id}]  {snippet}")
    if not hits:
        print("No matches.")
    return 0


def cmd_reindex(svc: Services, args: argparse.Namespace) -> int:
    chunks = svc.knowledge.reindex(actor=_actor())
    print(f"Rebuilt the index from SQL: {svc.knowledge.count()} documents, {chunks} chunks.")
    return 0


def cmd_check(svc: Services, args: argparse.Namespace) -> int:
    problems = svc.knowledge.check()
    if args.json:
        _json([asdict(p) for p in problems])
    elif problems:
        for p in problems:
            print(f"#{p.document_id} {p.title}: {p.indexed_chunks} chunks indexed, "
                  f"{p.expected_chunks} expected")
        print("Run `assistant kb reindex` to repair the index.")
    else:
        print(f"OK: the index matches SQL ({svc.knowledge.count()} documents).")
    return 1 if problems else 0


def cmd_export(svc: Services, args: argparse.Namespace) -> int:
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        count = 0
        for line in svc.knowledge.export():
            out.write(line + "\n")
            count += 1
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"Exported {count} documents to {args.out}.")
    return 0


def cmd_log(svc: Services, args: argparse.Namespace) -> int:
    entries = svc.store.audit_entries(args.limit)
    if args.json:
        _json([{"at": e.at, "actor": e.actor, "action": e.action, "document_id": e.document_id,
                "details": e.details} for e in entries])
        return 0
    for e in entries:
        doc = f"#{e.document_id}" if e.document_id else ""
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor:<20} {e.action:<8} {doc:<6} "
              f"{json.dumps(e.details, ensure_ascii=False)}")
    return 0


def cmd_boosts(svc: Services, args: argparse.Namespace) -> int:
    """Show the feedback boosts; recompute them now, or remove them all."""
    boosts = svc.knowledge.boosts
    if args.reset:
        print(f"Removed {boosts.reset(_actor())} boosts; retrieval ranks by similarity alone "
              "until the next nightly run (or `kb boosts --recompute`).")
        return 0
    if args.recompute:
        summary = svc.knowledge.recompute_boosts(_actor())
        print(f"Recomputed: {summary['raised']} chunks raised, {summary['lowered']} lowered.")
    rows = boosts.all()
    if args.json:
        _json([asdict(b) for b in rows])
        return 0
    if not rows:
        print("No boosts: no rated answer has cited a chunk yet (or they were reset).")
    for b in rows[: args.limit]:
        asked = (f", for questions like “{b.questions[0]}”"
                 + (f" (+{len(b.questions) - 1} more)" if len(b.questions) > 1 else "")
                 if b.questions else ", for every question")
        print(f"{b.boost:+.4f}  {b.chunk_id:<14} 👍 {b.up} users, 👎+correction {b.down} users"
              f"{asked}")
    return 0


def _run(func):
    def run(settings: Settings, args: argparse.Namespace) -> int:
        svc = _open(settings)
        try:
            return func(svc, args)
        finally:
            svc.close()
    return run


def register(sub: argparse._SubParsersAction) -> None:
    kb = sub.add_parser("kb", help="Curate the knowledge base").add_subparsers(
        dest="kb_command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = kb.add_parser(name, help=help)
        p.set_defaults(func=_run(func))
        return p

    p = command("add", cmd_add, "Add files (.txt .md .html .pdf); the same file again replaces it")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p = command("list", cmd_list, "List documents, a page at a time")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--per-page", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p = command("show", cmd_show, "A document's metadata and first lines")
    p.add_argument("id", type=int)
    p.add_argument("--lines", type=int, default=15)
    p.add_argument("--json", action="store_true")
    p = command("remove", cmd_remove, "Remove a document and its chunks")
    p.add_argument("id", type=int)
    p = command("search", cmd_search, "Search, with scores")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    command("reindex", cmd_reindex, "Rebuild the Chroma index from SQL")
    p = command("check", cmd_check, "Compare the index with SQL; exit 1 if they differ")
    p.add_argument("--json", action="store_true")
    p = command("export", cmd_export, "All documents as JSON lines (stdout or --out FILE)")
    p.add_argument("--out")
    p = command("boosts", cmd_boosts, "Retrieval boosts learnt from ratings (nightly); "
                "--recompute now, --reset to remove them all")
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--reset", action="store_true")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")
    p = command("log", cmd_log, "Who changed the knowledge base, newest first")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")
