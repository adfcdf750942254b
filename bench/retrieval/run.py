"""Retrieval benchmark on a real documentation corpus (Debian's `sqlite3-doc` HTML).

Builds a knowledge base with the product's own ingest path (SQL + Chroma + the packaged
embedding model), then measures:
  * quality: recall@1, recall@5 and MRR@10 of the expected page over questions.json;
  * ingest throughput: pages/s and chunks/s;
  * query latency (embed + Chroma + SQL version filter), p50/p95, at the corpus size and with
    the index padded to ~10k and ~100k chunks. Padding chunks carry random unit vectors (no
    text to embed), so they cost the index what real chunks would, without an hour of CPU.

Usage: python bench/retrieval/run.py [--corpus DIR] [--out FILE] [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.config import Settings  # noqa: E402
from bot.services import UserError  # noqa: E402
from bot.wiring import build_services  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path("/usr/share/doc/sqlite3")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rank_of(expected: str, sources: list[str]) -> int | None:
    """1-based rank of the first hit whose source file is `expected`, over unique documents."""
    seen: list[str] = []
    for source in sources:
        if source not in seen:
            seen.append(source)
    for i, source in enumerate(seen, 1):
        if Path(source).name == expected:
            return i
    return None


class BM25:
    """Okapi BM25 over the indexed chunks: the lexical half of the hybrid experiment."""

    def __init__(self, docs: dict[str, str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = {cid: Counter(self.tokens(t)) for cid, t in docs.items()}
        self.len = {cid: sum(tf.values()) for cid, tf in self.tf.items()}
        self.avg = sum(self.len.values()) / max(len(self.len), 1)
        df = Counter(w for tf in self.tf.values() for w in tf)
        n = len(self.tf)
        self.idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}
        self.postings: dict[str, list[str]] = {}
        for cid, tf in self.tf.items():
            for w in tf:
                self.postings.setdefault(w, []).append(cid)

    @staticmethod
    def tokens(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    def search(self, query: str, k: int) -> list[str]:
        scores: Counter[str] = Counter()
        for w in set(self.tokens(query)):
            for cid in self.postings.get(w, []):
                tf = self.tf[cid][w]
                norm = tf + self.k1 * (1 - self.b + self.b * self.len[cid] / self.avg)
                scores[cid] += self.idf[w] * tf * (self.k1 + 1) / norm
        return [cid for cid, _ in scores.most_common(k)]


def hybrid_search(knowledge, bm25: BM25, query: str, k: int = 50):  # type: ignore[no-untyped-def]
    """Reciprocal-rank fusion of the dense and the BM25 rankings; returns document ids."""
    dense = knowledge.index.search(query, k)
    fused: Counter[str] = Counter()
    for rank, hit in enumerate(dense):
        fused[hit.chunk_id] += 1 / (60 + rank)
    for rank, cid in enumerate(bm25.search(query, k)):
        fused[cid] += 1 / (60 + rank)
    return [int(cid.split(":")[0]) for cid, _ in fused.most_common(20)]


def evaluate(knowledge, questions: list[dict], sources: dict[int, str], bm25=None) -> dict:  # type: ignore[no-untyped-def]
    ranks, latencies = [], []
    for item in questions:
        started = time.perf_counter()
        if bm25 is None:
            doc_ids = [h.document_id for h in knowledge.search(item["q"], 10)]
        else:
            doc_ids = hybrid_search(knowledge, bm25, item["q"])
        latencies.append((time.perf_counter() - started) * 1000)
        ranks.append(rank_of(item["doc"], [sources[d] for d in doc_ids if d in sources]))
    n = len(questions)
    return {
        "recall@1": round(sum(r == 1 for r in ranks) / n, 3),
        "recall@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 3),
        "mrr@10": round(sum(1 / r for r in ranks if r) / n, 3),
        "misses": [q["q"] for q, r in zip(questions, ranks) if r is None or r > 5],
        "latency_ms": latencies,
    }


def latency_summary(latencies: list[float]) -> dict:
    return {"p50_ms": round(percentile(latencies, 0.5), 1),
            "p95_ms": round(percentile(latencies, 0.95), 1)}


def pad_index(index, target: int, dim: int, rng: random.Random) -> int:  # type: ignore[no-untyped-def]
    """Add random-vector chunks until the collection holds `target` chunks."""
    collection = index._collection
    added = 0
    while collection.count() < target:
        n = min(5000, target - collection.count())
        vectors = []
        for _ in range(n):
            v = [rng.gauss(0, 1) for _ in range(dim)]
            norm = sum(x * x for x in v) ** 0.5
            vectors.append([x / norm for x in v])
        start = collection.count()
        ids = [f"pad:{start + i}" for i in range(n)]
        collection.add(ids=ids, embeddings=vectors, documents=["filler"] * n,
                       metadatas=[{"document_id": -1, "version": 1, "chunk": i, "title": "pad"}
                                  for i in range(n)])
        added += n
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--questions", type=Path, default=HERE / "questions.json")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "retrieval.json")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000],
                        help="Pad the index to these chunk counts to measure latency")
    parser.add_argument("--data-dir", type=Path,
                        default=HERE.parents[1] / ".cache" / "bench-retrieval",
                        help="Where the benchmark knowledge base lives; reused if present")
    parser.add_argument("--rebuild", action="store_true", help="Ingest the corpus again")
    args = parser.parse_args()
    if not args.corpus.exists():
        raise SystemExit(f"{args.corpus} not found: apt-get install sqlite3-doc")

    questions = json.loads(args.questions.read_text())
    pages = sorted(p for p in args.corpus.rglob("*.html"))
    data_dir = args.data_dir
    if args.rebuild and data_dir.exists():
        shutil.rmtree(data_dir)
    built = data_dir.exists()
    settings = Settings(data_dir=data_dir, _env_file=None)
    services = build_services(settings, with_chat=False, seed=False)
    knowledge = services.knowledge
    ingest = None
    if not built:
        started = time.perf_counter()
        added = skipped = 0
        for page in pages:
            try:
                result = knowledge.add_file(page, actor="bench")
                added += result.status.value == "added"
            except UserError:
                skipped += 1
        ingest_s = time.perf_counter() - started
        chunks = knowledge.index.count()
        ingest = {"pages": added, "skipped": skipped, "chunks": chunks,
                  "seconds": round(ingest_s, 1), "pages_per_s": round(added / ingest_s, 2),
                  "chunks_per_s": round(chunks / ingest_s, 1)}
        print(f"Ingested: {ingest}")
    elif args.out.exists():
        ingest = json.loads(args.out.read_text()).get("ingest")  # measured when it was built
    sources = {d.id: d.source for d in knowledge.list_documents()}
    batch = knowledge.index._collection.get(include=["documents"])
    chunk_texts = dict(zip(batch["ids"], batch["documents"]))
    corpus_chunks = len(chunk_texts)

    evaluate(knowledge, questions[:5], sources)  # warm-up
    dense = evaluate(knowledge, questions, sources)
    dense["latency_ms"] += evaluate(knowledge, questions, sources)["latency_ms"]
    hybrid = evaluate(knowledge, questions, sources, bm25=BM25(chunk_texts))
    variants = {name: {k: v for k, v in r.items() if k in ("recall@1", "recall@5", "mrr@10")}
                for name, r in (("dense", dense), ("hybrid_bm25_rrf", hybrid))}
    print(f"Quality: {variants}")
    scale = [{"chunks": corpus_chunks, **latency_summary(dense["latency_ms"])}]
    rng = random.Random(0)
    dim = len(knowledge._embedder.embed(["x"])[0])
    for size in args.sizes:
        t = time.perf_counter()
        pad_index(knowledge.index, size, dim, rng)
        pad_s = time.perf_counter() - t
        runs = evaluate(knowledge, questions, sources)
        runs["latency_ms"] += evaluate(knowledge, questions, sources)["latency_ms"]
        scale.append({"chunks": knowledge.index.count(), **latency_summary(runs["latency_ms"]),
                      "recall@5": runs["recall@5"], "padding_insert_s": round(pad_s, 1)})
        print(f"{knowledge.index.count()} chunks: {scale[-1]}")
    if args.sizes:  # padding is for measuring only: drop it so the next run starts clean
        knowledge.index._collection.delete(where={"document_id": -1})
    services.close()

    result = {
        "corpus": f"{args.corpus} (Debian sqlite3-doc), {len(pages)} HTML pages",
        "questions": len(questions),
        "embedding_model": settings.embedding_model or "all-MiniLM-L6-v2 (packaged)",
        "recall@1": dense["recall@1"], "recall@5": dense["recall@5"],
        "mrr@10": dense["mrr@10"],
        "variants": variants,
        "ingest": ingest,
        "query_latency": scale,
        "misses_at_5": dense["misses"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "misses_at_5"}, indent=2))


if __name__ == "__main__":
    main()
