"""Answer-quality benchmark: does the assistant answer a small fictional knowledge base right?

Builds the knowledge base in `kb/` (Markdown and HTML as they are; the .txt sources are written
out as PDF files first, so the PDF path is exercised too) with the product's own ingest path, then
asks every question of `questions.py` through `ChatService.answer`, exactly as the bot does, with
the settings of a fresh install. Figures:

  * accuracy: the answer holds every expected fact (answerable questions and follow-ups);
  * abstention: the reply says it does not know (unanswerable questions);
  * false abstention: the reply says it does not know although the knowledge base has the answer;
  * unsupported-claim rate: replies holding a number, price, time, name, e-mail or quoted term
    found in none of the excerpts retrieved for that question;
  * median answer words, reply p50/p95 seconds.

Usage: python bench/answers/run.py [--base] [--label NAME] [--out FILE] [--limit N]
                                  [--set brightwater|ferries|quillnote]
`--set ferries` asks a second knowledge base instead (`ferries/`: a fictional ferry company,
written in session 24), `--set quillnote` a third (`quillnote/`: a note-taking app's help
centre, written in session 25, held-out questions included, before the product first ran on
it); `--base` serves the base model even
when an adapter is promoted; `BASE_MODEL` picks the model.
The script only uses APIs that older versions of the product also have, so it can measure the
code before a change (PYTHONPATH=<old checkout>) beside the code after it, in one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bot.config import Settings  # noqa: E402
from bot.storage.store import UserInfo  # noqa: E402
from bot.wiring import build_services  # noqa: E402

ABSTAINS = re.compile(
    r"\b(do not know|don't know|dont know|not sure|no information|cannot find|can't find|"
    r"couldn't find|could not find|not in the knowledge base|nothing in the knowledge base|"
    r"not mentioned|does not say|doesn't say|no answer|nothing in my knowledge base|"
    r"rather not guess|does not answer)\b", re.I)
# A claim: something a reader would take as a fact that has to come from somewhere.
CLAIM = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"            # e-mail
    r"|\+?\d[\d ]*\d(?:[.,:/]\d+)*|\d"           # numbers, prices, times, phone numbers
    r"|\"[^\"]{2,40}\"|“[^”]{2,40}”"             # quoted terms
    r"|\b[A-Z][\w'-]*[A-Z0-9][\w-]*\b"           # mixed-case codes (BW-Members-5G, DeskLoop)
    r"|(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b",    # a capitalised word inside a sentence
    re.M)
COMMON = {"I", "The", "You", "Yes", "No", "Brightwater", "Monday", "Tuesday", "Wednesday",
          "Thursday", "Friday", "Saturday", "Sunday", "Wi", "Fi", "Sources", "Source", "Please",
          "According", "Question", "Answer", "Christmas", "New", "Year", "March", "Members"}


def norm(text: str) -> str:
    """Lower case, unified quotes, dashes and spaces, so facts compare as a reader would."""
    text = text.lower().replace("’", "'").replace("–", "-").replace("\u00a0", " ")
    return re.sub(r"\s+", " ", text)


def has(answer: str, fact: str) -> bool:
    """`fact` occurs in `answer` as a whole token run (so "4" does not match "140")."""
    pattern = r"(?<![\w.])" + re.escape(norm(fact)) + r"s?(?![\w])"
    return re.search(pattern, norm(answer)) is not None


def holds(answer: str, facts: list[str | list[str]]) -> bool:
    return all(any(has(answer, alt) for alt in ([f] if isinstance(f, str) else f))
               for f in facts)


def claims(answer: str) -> set[str]:
    found = set()
    for m in CLAIM.finditer(answer):
        token = m.group(0).strip("\"“”")
        if token in COMMON or not token.strip():
            continue
        found.add(token)
    return found


def unsupported(answer: str, excerpts: str) -> list[str]:
    """The claims of `answer` that appear in none of the excerpts (spaces and case ignored)."""
    source = re.sub(r"[\s,]", "", norm(excerpts))
    return [c for c in claims(answer) if re.sub(r"[\s,]", "", norm(c)) not in source]


def text_pdf(text: str) -> bytes:
    """A plain one-column PDF of `text` (Helvetica, WinAnsi), enough for any PDF reader."""
    lines: list[str] = []
    for para in text.splitlines():
        words, line = para.split(), ""
        for word in words:
            if len(line) + len(word) + 1 > 90:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    pages = [lines[i:i + 50] for i in range(0, len(lines), 50)] or [[]]
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    kids = []
    for page in pages:
        ops = ["BT /F1 11 Tf 14 TL 56 790 Td"]
        for line in page:
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode("latin-1") + stream
                       + b"\nendstream")  # type: ignore[arg-type]
        content_no = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents "
                       f"{content_no} 0 R /Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(len(objects))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        body = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# Each set: a knowledge base (`kb/`) and its questions (`questions.py`) in one folder.
SETS = {"brightwater": HERE, "ferries": HERE / "ferries", "quillnote": HERE / "quillnote"}


def load_set(name: str):  # type: ignore[no-untyped-def]
    """The questions module of set `name`."""
    spec = importlib.util.spec_from_file_location(f"questions_{name}", SETS[name] / "questions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus(target: Path, source: Path = HERE) -> list[Path]:
    """The knowledge base's files (`source`/kb), with each .txt source turned into a PDF."""
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for src in sorted((source / "kb").iterdir()):
        if src.suffix == ".txt":
            dest = target / f"{src.stem}.pdf"
            dest.write_bytes(text_pdf(src.read_text()))
        else:
            dest = target / src.name
            shutil.copy(src, dest)
        files.append(dest)
    return files


class RecordingRetriever:
    """Passes searches through and keeps every excerpt retrieved for the current question."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.seen: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def search(self, query: str, k: int, *args, **options):  # type: ignore[no-untyped-def]
        hits = self.inner.search(query, k, *args, **options)
        self.seen += [f"{h.title}\n{h.text}" for h in hits]
        return hits


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", action="store_true", help="serve the base model, no adapter")
    parser.add_argument("--label", default="", help="name of this run in the results file")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "answers.json")
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N of each kind")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the data dir here (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--set", choices=list(SETS), default="brightwater",
                        help="which knowledge base and questions to ask")
    args = parser.parse_args()
    qs = load_set(args.set)
    COMMON.add(getattr(qs, "NAME", "Brightwater"))

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-answers-"))
    settings = Settings(_env_file=None, data_dir=data_dir, seed_knowledge=False,
                        **({"base_model": os.environ["BASE_MODEL"]}
                           if os.environ.get("BASE_MODEL") else {}))
    if args.base:
        shutil.rmtree(settings.adapters_dir, ignore_errors=True)
    services = build_services(settings, seed=False)
    for path in corpus(data_dir / "corpus", SETS[args.set]):
        services.knowledge.add_file(path, actor="bench")
    chat = services.chat
    assert chat is not None
    recorder = RecordingRetriever(chat.retriever)
    chat.retriever = recorder
    user = UserInfo(id=1, username="bench", first_name="Bench", language_code="en")

    limit = args.limit or None
    rows: list[dict] = []
    chat_id = 1000

    def ask(kind: str, question: str, facts: list | None, warmup: str | None = None) -> None:
        nonlocal chat_id
        chat_id += 1
        if warmup:
            chat.answer(chat_id, user, warmup)
        recorder.seen = []
        started = time.monotonic()
        reply = chat.answer(chat_id, user, question)
        seconds = time.monotonic() - started
        shown = reply.render("en")
        row = {"kind": kind, "question": question, "answer": reply.text,
               "sources": reply.sources, "seconds": round(seconds, 3),
               "abstained": bool(ABSTAINS.search(reply.text)),
               "unsupported": unsupported(reply.text, "\n".join(recorder.seen)),
               "words": len(reply.text.split()),
               # how the reply came to be, and what it came from: `grounding` "verified" (the
               # model's words, checked), "extractive" (its evidence quoted instead), "abstained"
               "grounding": reply.grounding, "generated": reply.generated,
               "evidence": [e.framed for e in reply.evidence]}
        if facts is not None:  # "I don't know: ... does not answer" holds no fact, even "not"
            row["correct"] = holds(reply.text, facts) and not row["abstained"]
        rows.append(row)
        if args.verbose:
            mark = {True: "✓", False: "✗", None: "?"}[row.get("correct")]
            print(f"[{kind} {mark}] {question}\n    -> {shown!r} {row['unsupported'] or ''}",
                  flush=True)

    model = getattr(chat.model, "adapter_version", "?")
    ask("warmup", getattr(qs, "WARMUP", "Hello, what can you tell me about Brightwater?"), None)
    rows.clear()
    for question, facts in qs.ANSWERABLE[:limit]:
        ask("answerable", question, facts)
    for question in qs.UNANSWERABLE[:limit]:
        ask("unanswerable", question, None)
    for first, follow, facts in qs.FOLLOW_UPS[:limit]:
        ask("follow_up", follow, facts, warmup=first)
    for question, facts in qs.HELD_OUT_ANSWERABLE[:limit]:
        ask("held_out", question, facts)
    for question in qs.HELD_OUT_UNANSWERABLE[:limit]:
        ask("held_out_unanswerable", question, None)

    held_out = [r for r in rows if r["kind"].startswith("held_out")]
    rows_all, rows = rows, [r for r in rows if not r["kind"].startswith("held_out")]
    answerable = [r for r in rows if r["kind"] in ("answerable", "follow_up")]
    unanswerable = [r for r in rows if r["kind"] == "unanswerable"]
    answered = [r for r in rows if not r["abstained"]]
    seconds = [r["seconds"] for r in rows]
    held_answerable = [r for r in held_out if r["kind"] == "held_out"]
    held_unanswerable = [r for r in held_out if r["kind"] == "held_out_unanswerable"]
    figures = {
        "accuracy": round(sum(r["correct"] for r in answerable) / len(answerable), 3),
        "accuracy_direct": round(statistics.mean(r["correct"] for r in rows
                                                 if r["kind"] == "answerable"), 3),
        "accuracy_follow_up": round(statistics.mean(r["correct"] for r in rows
                                                    if r["kind"] == "follow_up"), 3),
        "abstention": round(sum(r["abstained"] for r in unanswerable) / len(unanswerable), 3),
        "false_abstention": round(sum(r["abstained"] for r in answerable) / len(answerable), 3),
        "unsupported_claim_rate": round(sum(bool(r["unsupported"]) for r in rows) / len(rows), 3),
        "median_answer_words": statistics.median(r["words"] for r in answered) if answered else 0,
        "reply_p50_s": round(percentile(seconds, 0.5), 3),
        "reply_p95_s": round(percentile(seconds, 0.95), 3),
        "questions": {"answerable": len(answerable) - len(qs.FOLLOW_UPS[:limit]),
                      "unanswerable": len(unanswerable), "follow_up": len(qs.FOLLOW_UPS[:limit])},
    }
    if held_out:  # questions written after the rules were set: how well the above generalise
        figures["held_out"] = {
            "accuracy": round(statistics.mean(r["correct"] for r in held_answerable), 3),
            "abstention": round(statistics.mean(r["abstained"] for r in held_unanswerable), 3),
            "false_abstention": round(statistics.mean(r["abstained"] for r in held_answerable), 3),
            "unsupported_claim_rate": round(statistics.mean(bool(r["unsupported"])
                                                            for r in held_out), 3),
            "questions": {"answerable": len(held_answerable),
                          "unanswerable": len(held_unanswerable)},
        }
    label = args.label or ("base" if args.base else "default")
    run = {"label": label, "set": args.set, "adapter": model, "figures": figures,
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count()},
           "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows_all}
    print(json.dumps({"label": label, "adapter": model, **figures}, indent=2))
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    results["runs"] = [r for r in results.get("runs", []) if r["label"] != label] + [run]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    services.close()
    if not args.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
