"""Retrieval benchmark on two real documentation corpora of different kinds, installed by apt:
Debian's `sqlite3-doc` (766 HTML pages: tutorials, C API, SQL reference) and the SQL command and
client/server application reference pages of `postgresql-doc-15` (218 manual pages).

One run measures, on this machine:
  * quality per variant and corpus: recall@1, recall@5 (expected page among the documents of
    the top 5 chunks) and MRR@10 over hand-written paraphrased questions; weights are fitted on
    sqlite and checked on postgresql (bench/retrieval/quality.py);
  * ingest throughput, side by side on the same pages: one file at a time with
    sentence-transformers (the path before this change) and `add_files` with ONNX Runtime;
  * query latency of the product's search (embed + Chroma + SQL version filter + ranking),
    p50/p95, at the corpus size and with the index padded to 100k chunks (random unit vectors).

Usage: python bench/retrieval/run.py [--out FILE] [--sizes 100000] [--ingest-pages 60]
Needs: apt-get install sqlite3-doc postgresql-doc-15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import quality  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.services import UserError  # noqa: E402
from bot.wiring import build_services  # noqa: E402
from knowledge.embeddings import (  # noqa: E402
    SentenceTransformerEmbedder,
    load_embedder,
    model_label,
    resolve_model,
)
from knowledge.retrieval import DEFAULT_RANKING  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "bench-retrieval"
PG_HTML = Path("/usr/share/doc/postgresql-doc-15/html")
CORPORA = {
    "sqlite": (lambda: sorted(Path("/usr/share/doc/sqlite3").rglob("*.html")), "questions.json",
               "sqlite3-doc"),
    "postgresql": (lambda: sorted([*PG_HTML.glob("sql-*.html"), *PG_HTML.glob("app-*.html")]),
                   "questions_postgresql.json", "postgresql-doc-15"),
}
FIT_ON = "sqlite"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure_quality(embedder, tag: str = "") -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """{variant: {corpus: metrics}} and the chosen settings."""
    results: dict[str, dict[str, dict]] = {}
    chosen: dict = {}
    corpora = {}
    for name, (pages, qfile, _) in CORPORA.items():
        corpus = quality.load_corpus(name, pages())
        questions = json.loads((HERE / qfile).read_text())
        cache = quality.VectorCache(CACHE / f"vectors-{name}{tag}.npz", embedder)
        qvecs = np.array(embedder.embed([q["q"] for q in questions]), dtype=np.float32)
        corpora[name] = (corpus, questions, cache, qvecs)
        print(f"{name}: {len(corpus.pages)} pages, {len(questions)} questions", flush=True)
        for variant, (options, ranking, weight) in quality.VARIANTS.items():
            chunks = quality.build_chunks(corpus, embedder, cache, **options)
            results.setdefault(variant, {})[name] = quality.evaluate(
                corpus, chunks, questions, qvecs, ranking, weight)
            print(f"  {variant}: {_brief(results[variant][name])}", flush=True)
    # Chunk text: keep each option only if it does not hurt either corpus.
    options = {"summary": False, "section_path": False}
    for variant, key in (("+ one-line summary in the title", "summary"),
                         ("+ section path", "section_path")):
        previous = "dense (before)" if key == "summary" else "+ one-line summary in the title"
        if all(results[variant][c]["mrr@10"] >= results[previous][c]["mrr@10"] for c in CORPORA):
            options[key] = True
    chosen["chunk_text"] = options
    base = quality.Ranking(per_document=1)
    built = {name: quality.build_chunks(c[0], embedder, c[2], **options)
             for name, c in corpora.items()}
    for name, chunks in built.items():
        chunks.bm25 = quality.BM25({i: f"{corpora[name][0].titles[d]}\n{t}"
                                    for i, (d, t) in enumerate(zip(chunks.doc, chunks.text,
                                                                   strict=True))})
    for variant, (ranking, weight) in quality.ranking_grid(base).items():
        for name, (corpus, questions, _, qvecs) in corpora.items():
            results.setdefault(variant, {})[name] = quality.evaluate(
                corpus, built[name], questions, qvecs, ranking, weight)
        print(f"  {variant}: " + ", ".join(f"{c} {_brief(results[variant][c])}" for c in CORPORA),
              flush=True)
    # Fit on one corpus (best MRR@10), check on the other.
    fitted = max(quality.ranking_grid(base), key=lambda v: results[v][FIT_ON]["mrr@10"])
    chosen["ranking_fitted_on_" + FIT_ON] = fitted
    product = DEFAULT_RANKING
    chosen["product_ranking"] = str(product)
    followups = json.loads((HERE / "followups.json").read_text())
    chosen["follow_ups"] = {}
    # Follow-ups are asked of answering, which ranks by similarity alone (`ANSWER_RANKING`);
    # pages are still counted one per document, as everywhere in this table.
    by_similarity = replace(product, document_bm25=0.0)
    for name, (corpus, _, cache, _) in corpora.items():
        chosen["follow_ups"][name] = quality.follow_ups(
            corpus, built[name], [f for f in followups if f["corpus"] == name], cache,
            by_similarity)
        print(f"follow-ups {name}: {chosen['follow_ups'][name]}", flush=True)
    chosen["feedback"] = {}
    paraphrases = json.loads((HERE / "paraphrases.json").read_text())
    for name, (corpus, questions, _, qvecs) in corpora.items():
        chosen["feedback"][name] = quality.simulate_feedback(
            corpus, built[name], questions, qvecs, product, paraphrases[name], embedder)
        print(f"feedback {name}: {chosen['feedback'][name]}", flush=True)
    return results, chosen


def _brief(m: dict) -> str:
    return f"R@1 {m['recall@1']:.3f} R@5 {m['recall@5']:.3f} MRR {m['mrr@10']:.3f}"


def measure_ingest(pages: list[Path], data_dir: Path) -> dict:
    """The same pages through both ingest paths, each into a fresh knowledge base."""
    out = {}
    for label, batched, bulk in (
            ("one file at a time, sentence-transformers (before)", False, ""),
            ("add_files, ONNX Runtime", True, "false"),
            ("add_files, sentence-transformers in bfloat16 (INGEST_BF16=true)", True, "true")):
        # A directory of its own each: Chroma keeps one client per path for the process.
        path = data_dir / (f"bulk-{bulk}" if batched else "before")
        shutil.rmtree(path, ignore_errors=True)
        settings = Settings(data_dir=path, model_cache_dir=ROOT / ".cache" / "models",
                            _env_file=None)
        embedder = (load_embedder(None, settings.models_dir / "embeddings", bulk=bulk)
                    if batched else SentenceTransformerEmbedder())
        embedder.embed(["warm up"] * (64 if bulk == "true" else 1))
        services = build_services(settings, with_chat=False, seed=False, embedder=embedder)
        started = time.perf_counter()
        if batched:
            for _ in services.knowledge.add_files(pages, actor="bench"):
                pass
        else:
            for page in pages:
                try:
                    services.knowledge.add_file(page, actor="bench")
                except UserError:
                    pass
        seconds = time.perf_counter() - started
        chunks = services.knowledge.index.count()
        out[label] = {"pages": len(pages), "chunks": chunks, "seconds": round(seconds, 1),
                      "chunks_per_s": round(chunks / seconds, 1)}
        print(f"ingest {label}: {out[label]}", flush=True)
        services.close()
    rates = [v["chunks_per_s"] for v in out.values()]
    out["speed-up"] = round(rates[1] / rates[0], 2)
    out["speed-up, bfloat16"] = round(rates[2] / rates[0], 2)
    return out


def measure_latency(pages: list[Path], questions: list[dict], data_dir: Path,
                    sizes: list[int], search_model: str = "") -> list[dict]:
    """The product's search over the postgresql corpus, then padded to each size. The first
    row also gives the ingest of `pages` (`add_files`, `search_model`'s vectors)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(data_dir=data_dir, model_cache_dir=ROOT / ".cache" / "models",
                        search_model=search_model, _env_file=None)
    services = build_services(settings, with_chat=False, seed=False)
    knowledge = services.knowledge
    knowledge.index.embedder.embed(["warm up"])  # loaded (and exported, once) before the clock
    started = time.perf_counter()
    for _ in knowledge.add_files(pages, actor="bench"):
        pass
    ingest_s = time.perf_counter() - started

    def run() -> list[float]:
        times = []
        for item in questions * 2:
            started = time.perf_counter()
            knowledge.search(item["q"], 6)
            times.append((time.perf_counter() - started) * 1000)
        return times

    run()  # warm-up
    chunks = knowledge.index.count()
    rows = [{"chunks": chunks, **_latency(run()), "ingest_s": round(ingest_s, 1),
             "ingest_chunks_per_s": round(chunks / ingest_s, 1)}]
    rng = np.random.default_rng(0)
    collection = knowledge.index._collection
    width = len(knowledge.index.query_vector("width") or [])
    for size in sizes:
        started = time.perf_counter()
        while collection.count() < size:
            n = min(5000, size - collection.count())
            vectors = rng.normal(size=(n, width)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            start = collection.count()
            collection.add(ids=[f"pad:{start + i}" for i in range(n)], embeddings=vectors,
                           documents=["filler"] * n,
                           metadatas=[{"document_id": -1, "version": 1, "chunk": i, "title": "pad"}
                                      for i in range(n)])
        rows.append({"chunks": collection.count(), **_latency(run()),
                     "padding_insert_s": round(time.perf_counter() - started, 1)})
        print(f"latency: {rows[-1]}", flush=True)
    services.close()
    return rows


def measure_search_model(name: str, pages: list[Path], sizes: list[int],
                         latency: bool = True) -> dict:
    """Another SEARCH_MODEL against the packaged one, in this run: quality on both corpora
    with the kept chunk text (plain dense, one chunk per document, and the product's
    ranking), follow-ups, the feedback simulation, then ingest of `pages` and query latency
    through the product for both models."""
    cache_dir = ROOT / ".cache" / "models" / "embeddings"
    path = resolve_model(name, cache_dir)
    models = {"packaged": load_embedder(None, cache_dir), name: load_embedder(path, cache_dir)}
    out: dict = {"quality": {}, "follow_ups": {}, "feedback": {}, "ingest_and_latency": {}}
    followups = json.loads((HERE / "followups.json").read_text())
    paraphrases = json.loads((HERE / "paraphrases.json").read_text())
    plain = quality.Ranking(per_document=1)
    for corpus_name, (corpus_pages, qfile, _) in CORPORA.items():
        corpus = quality.load_corpus(corpus_name, corpus_pages())
        questions = json.loads((HERE / qfile).read_text())
        for label, embedder in models.items():
            tag = "" if label == "packaged" else f"-{model_label(name)}"
            cache = quality.VectorCache(CACHE / f"vectors-{corpus_name}{tag}.npz", embedder)
            qvecs = np.array(embedder.embed([q["q"] for q in questions]), dtype=np.float32)
            chunks = quality.build_chunks(corpus, embedder, cache, summary=True,
                                          section_path=False)
            row = {"dense, one chunk per document": quality.evaluate(
                corpus, chunks, questions, qvecs, plain),
                "the product's ranking": quality.evaluate(
                corpus, chunks, questions, qvecs, DEFAULT_RANKING)}
            out["quality"].setdefault(label, {})[corpus_name] = row
            print(f"{label} {corpus_name}: " + ", ".join(f"{k} {_brief(v)}"
                                                         for k, v in row.items()), flush=True)
            out["follow_ups"].setdefault(label, {})[corpus_name] = quality.follow_ups(
                corpus, chunks, [f for f in followups if f["corpus"] == corpus_name], cache,
                replace(DEFAULT_RANKING, document_bm25=0.0))
            out["feedback"].setdefault(label, {})[corpus_name] = quality.simulate_feedback(
                corpus, chunks, questions, qvecs, DEFAULT_RANKING, paraphrases[corpus_name],
                embedder)
    questions = json.loads((HERE / CORPORA["postgresql"][1]).read_text())
    for label, setting in (("packaged", ""), (name, name)) if latency else ():
        out["ingest_and_latency"][label] = measure_latency(
            pages, questions, CACHE / f"latency-{model_label(setting)}", sizes, setting)
        print(f"{label}: {out['ingest_and_latency'][label]}", flush=True)
    return out


def _latency(times: list[float]) -> dict:
    return {"p50_ms": round(percentile(times, 0.5), 1), "p95_ms": round(percentile(times, 0.95), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "retrieval.json")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--ingest-pages", type=int, default=60)
    parser.add_argument("--skip", nargs="*", default=[], choices=["quality", "ingest", "latency"])
    parser.add_argument("--bulk-quality", action="store_true", help="also measure quality with "
                        "the chunks embedded in bfloat16 (INGEST_BF16=true), questions on ONNX")
    parser.add_argument("--search-model", default="", help="instead of the phases: this "
                        "SEARCH_MODEL (e.g. all-mpnet-base-v2) against the packaged model, "
                        "quality on both corpora, ingest of --ingest-pages pages and latency "
                        "(--skip latency: quality only)")
    args = parser.parse_args()
    for name, (pages, _, package) in CORPORA.items():
        if not pages():
            raise SystemExit(f"The {name} corpus is missing: apt-get install {package}")
    result = json.loads(args.out.read_text()) if args.out.exists() else {}

    def save() -> None:  # after each phase, so phases can also be run one at a time
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")

    pg_pages = CORPORA["postgresql"][0]()
    sample = pg_pages[:: max(1, len(pg_pages) // args.ingest_pages)][: args.ingest_pages]
    if args.search_model:
        result.setdefault("search_models", {})[args.search_model] = measure_search_model(
            args.search_model, sample, args.sizes, latency="latency" not in args.skip)
        result["search_models"][args.search_model]["machine"] = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or ''}")
        save()
        return
    embedder = load_embedder(None, ROOT / ".cache" / "models" / "embeddings")
    if "quality" not in args.skip:
        result["variants"], result["chosen"] = measure_quality(embedder)
        save()
    if args.bulk_quality:
        bulk = load_embedder(None, ROOT / ".cache" / "models" / "embeddings", bulk="true")
        result["variants_bfloat16_chunks"], _ = measure_quality(bulk, "-bf16")
        save()
    if "ingest" not in args.skip:
        result["ingest"] = measure_ingest(sample, CACHE / "ingest")
        save()
    if "latency" not in args.skip:
        questions = json.loads((HERE / CORPORA["postgresql"][1]).read_text())
        result["query_latency"] = measure_latency(pg_pages, questions, CACHE / "latency",
                                                  args.sizes)
    result["corpora"] = {name: f"{package}: {len(pages())} HTML pages, "
                         f"{len(json.loads((HERE / q).read_text()))} questions"
                         for name, (pages, q, package) in CORPORA.items()}
    result["embedding_model"] = "all-MiniLM-L6-v2 (packaged), ONNX Runtime"
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         f"Python {platform.python_version()}")
    for stale in ("recall@1", "recall@5", "mrr@10", "misses_at_5", "corpus", "questions"):
        result.pop(stale, None)
    save()
    print(json.dumps({k: v for k, v in result.items() if k != "variants"}, indent=2))


if __name__ == "__main__":
    main()
