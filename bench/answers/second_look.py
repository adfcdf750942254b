"""What looking among the 20 nearest chunks costs on a large knowledge base.

Answering scores the `look_among_k` nearest chunks by their nearest sentence too and keeps the
best `retrieval_k` (`ChatService.retrieve(..., among=...)`), which embeds the sentences of
chunks it has not seen yet. Until session 32 it looked among `retrieval_k` (6) first and among
20 only before "I don't know" (a second look). This ingests the postgresql corpus of
`bench/retrieval` (218 manual pages, about 2,800 chunks) with the product's path and times, for
each of that bench's questions, the look among 6 and the look among 20, with the sentence cache
emptied before each (the worst case: every chunk new to the process).

Usage: python bench/answers/second_look.py [--out FILE]   (needs postgresql-doc-15, as
bench/retrieval does; results: bench/results/second_look.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import Settings  # noqa: E402
from bot.services.chat import ChatLimits, ChatService  # noqa: E402
from bot.wiring import build_services  # noqa: E402

PG_HTML = Path("/usr/share/doc/postgresql-doc-15/html")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "second_look.json")
    args = parser.parse_args()
    pages = sorted([*PG_HTML.glob("sql-*.html"), *PG_HTML.glob("app-*.html")])
    if not pages:
        sys.exit("needs: apt-get install postgresql-doc-15")
    items = json.loads((ROOT / "bench" / "retrieval" / "questions_postgresql.json").read_text())
    questions = [q["q"] for q in items]
    expected = {q["q"]: q["doc"] for q in items}
    data_dir = Path(tempfile.mkdtemp(prefix="bench-second-look-"))
    settings = Settings(_env_file=None, data_dir=data_dir, seed_knowledge=False,
                        model_cache_dir=ROOT / ".cache" / "models")
    services = build_services(settings, with_chat=False, seed=False)
    for _ in services.knowledge.add_files(pages, actor="bench"):
        pass
    chunks = services.knowledge.index.count()
    limits = ChatLimits()
    chat = ChatService(services.store, services.knowledge, None,  # type: ignore[arg-type]
                       settings.system_prompt, limits)
    picker = services.knowledge._picker
    first_s, second_s, empty_first, found_second, differs = [], [], 0, 0, 0
    # how often the first evidence sentence comes from the page the question is about
    source = {d.id: Path(d.source).name for d in services.knowledge.list_documents()}
    right = {"before": 0, "now": 0}

    def page(evidence: list) -> str:  # type: ignore[type-arg]
        return source.get(int(evidence[0].chunk_id.split(":")[0]), "") if evidence else ""
    chat.retrieve("warm up")
    for question in questions:
        picker._cache.clear()
        started = time.perf_counter()
        hits = chat.retrieve(question)
        evidence = chat.choose_evidence(question, hits, "", "en") if hits else []
        first_s.append(time.perf_counter() - started)
        picker._cache.clear()
        started = time.perf_counter()
        wide = chat.retrieve(question, among=limits.look_among_k)
        wider = chat.choose_evidence(question, wide, "", "en") if wide else []
        second_s.append(time.perf_counter() - started)
        empty_first += not evidence
        found_second += not evidence and bool(wider)
        differs += (evidence[:1] != wider[:1])
        right["before"] += page(evidence) == expected[question]
        right["now"] += page(wider) == expected[question]

    def summary(times: list[float]) -> dict:
        return {"p50_s": round(statistics.median(times), 3),
                "p95_s": round(percentile(times, 0.95), 3)}

    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count()},
              "date": time.strftime("%Y-%m-%d %H:%M"), "chunks": chunks,
              "questions": len(questions), "look_among_k": limits.look_among_k,
              "among_retrieval_k_cold (before)": summary(first_s),
              "among_look_among_k_cold (now)": summary(second_s),
              "among_retrieval_k_found_no_evidence": empty_first,
              "of_those_found_among_look_among_k": found_second,
              "first_evidence_differs": differs,
              "first_evidence_from_the_expected_page": right}
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    services.close()


if __name__ == "__main__":
    main()
