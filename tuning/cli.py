"""`assistant tune ...`: nightly retraining and the adapter registry from the command line.

Heavy imports (torch, transformers, peft) happen inside the commands, never at import time.
"""

from __future__ import annotations

import argparse
import json
import sys

from bot.config import Settings
from tuning.config import parse_config
from tuning.registry import AdapterRegistry, RegistryError


def _tuning_run(run, settings: Settings, args: argparse.Namespace) -> int:
    from tuning.runs import AlreadyRunning

    try:
        outcome = run(settings, parse_config(args.options, f"assistant tune {args.tune_command}"))
    except AlreadyRunning as exc:
        print(exc, file=sys.stderr)
        return 3
    print(f"Run {outcome.run_id}: {outcome.status}"
          + (f", candidate {outcome.version}" if outcome.version else ""))
    for reason in outcome.reasons:
        print(f"  - {reason}")
    return 0


def cmd_nightly(settings: Settings, args: argparse.Namespace) -> int:
    from tuning.nightly import run_nightly

    return _tuning_run(run_nightly, settings, args)


def cmd_dialog(settings: Settings, args: argparse.Namespace) -> int:
    from tuning.dialog import run_dialog

    return _tuning_run(run_dialog, settings, args)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    registry = AdapterRegistry(settings.adapters_dir)
    current = registry.current()
    rows = [{"version": v, "current": v == current, **{k: registry.meta(v).get(k) for k in
                                                       ("kind", "from", "method", "promoted")}}
            for v in registry.versions()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Serving: {current or 'base model (no adapter)'}")
    for r in rows:
        mark = "*" if r["current"] else " "
        print(f"{mark} {r['version']}  {r['kind'] or '?':<8} {r['method'] or '?':<14} "
              f"from {r['from'] or 'base'}  {'passed the gate' if r['promoted'] else ''}")
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    registry = AdapterRegistry(settings.adapters_dir)
    try:
        registry.path(args.version)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"version": args.version, "current": registry.current() == args.version,
                      **registry.meta(args.version)}, indent=2, default=str))
    return 0


def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    try:
        AdapterRegistry(settings.adapters_dir).promote(args.version, reason="manual")
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.version} is now serving; running bots switch before their next answer.")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    try:
        previous = AdapterRegistry(settings.adapters_dir).rollback()
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Rolled back; now serving {previous or 'the base model'}.")
    return 0


def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    deleted = AdapterRegistry(settings.adapters_dir).prune(args.keep)
    print(f"Deleted {', '.join(deleted)}." if deleted else "Nothing to delete.")
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from tuning.nightly import evaluate_version

    cfg = parse_config(args.options, "assistant tune eval VERSION")
    if not args.version:
        print("Which version? assistant tune eval VERSION (or 'base')", file=sys.stderr)
        return 2
    try:
        metrics = evaluate_version(settings, args.version, cfg)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"version": args.version, **metrics.to_dict()}, indent=2))
    return 0


def cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    from tuning.nightly import runs

    rows = runs(settings, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        reasons = "; ".join((r.get("decision") or {}).get("reasons", []))
        print(f"#{r['id']} {r['started_at'][:16]} {r['kind']} {r['status']:<9} "
              f"{r['candidate_version'] or '-':<6} {reasons}")
    return 0


def with_knobs(commands: argparse._SubParsersAction, name: str, help_text: str,
               func) -> argparse.ArgumentParser:
    """A command taking the training knobs (`tuning.config`); they are parsed, and listed by
    `--help`, only when the command runs, so the rest of the CLI never imports transformers."""
    p = commands.add_parser(name, help=help_text, add_help=False)
    p.set_defaults(func=func, options=[])
    return p


def register(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser("tune", help="Retrain, evaluate and manage LoRA adapters")
    commands = tune.add_subparsers(dest="tune_command", required=True)
    with_knobs(commands, "nightly", "Train on new ratings; promote past the gate",
               cmd_nightly)
    with_knobs(commands, "dialog", "Train the first, dialog-tuned adapter from the knowledge "
                                   "base and the hand-written dialogs", cmd_dialog)
    p = commands.add_parser("list", help="Adapter versions; * marks the serving one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = commands.add_parser("show", help="One version's metadata and metrics")
    p.add_argument("version")
    p.set_defaults(func=cmd_show)
    p = commands.add_parser("promote", help="Serve a version (atomically)")
    p.add_argument("version")
    p.set_defaults(func=cmd_promote)
    commands.add_parser("rollback", help="Serve the previous version again").set_defaults(
        func=cmd_rollback)
    p = commands.add_parser("prune", help="Delete old versions but the newest N, the serving one "
                                          "and the N served most recently (nightly runs do it)")
    p.add_argument("--keep", type=int, default=30)
    p.set_defaults(func=cmd_prune)
    with_knobs(commands, "eval", "Measure a version (or 'base') the way the gate does",
               cmd_eval).add_argument("version", nargs="?")
    p = commands.add_parser("runs", help="Recent training runs and the gate's decisions")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)
