"""Do sentence vectors find the page better than chunk vectors? Each chunk's sentences
(`knowledge.evidence.sentences`, four words or more, under the page's title as chunks are) are
embedded too; a chunk scores by its own cosine, its best sentence's, or a mix, before the
product's ranking (document BM25), by exact search over every vector.

Usage: python bench/retrieval/sentences.py
Needs the corpora of run.py and reuses its cached vectors; embeds the sentences once into
.cache/bench-retrieval (25 minutes on 2 cores). Not kept in the product: see the README
(Retrieval).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import quality  # noqa: E402
import run  # noqa: E402

from knowledge.embeddings import load_embedder  # noqa: E402
from knowledge.evidence import sentences  # noqa: E402
from knowledge.index import Hit, KnowledgeIndex  # noqa: E402
from knowledge.retrieval import DEFAULT_RANKING, fetch_size, rank  # noqa: E402

Mix = Callable[[np.ndarray, np.ndarray], np.ndarray]
VARIANTS: dict[str, tuple[Mix, bool, float]] = {
    # name: (chunk score from (chunk cosine, best sentence cosine), re-rank only, BM25 weight)
    "the chunk's cosine (the product)": (lambda c, s: c, False, 0.2),
    "its best sentence's": (lambda c, s: np.where(s > -1, s, c), False, 0.2),
    "the larger of the two": (np.maximum, False, 0.2),
    "the larger, only to re-rank the chunks fetched as now": (np.maximum, True, 0.2),
    "their mean": (lambda c, s: (c + np.where(s > -1, s, c)) / 2, False, 0.2),
    **{f"the larger, document BM25 {w}": (np.maximum, False, w) for w in (0.1, 0.3, 0.4)},
}


def main() -> None:
    embedder = load_embedder(None, run.ROOT / ".cache" / "models" / "embeddings")
    out: dict[str, dict] = {}
    for name, (pages, qfile, _) in run.CORPORA.items():
        corpus = quality.load_corpus(name, pages())
        questions = json.loads((run.HERE / qfile).read_text())
        qvecs = np.array(embedder.embed([q["q"] for q in questions]), dtype=np.float32)
        chunks = quality.build_chunks(
            corpus, embedder, quality.VectorCache(run.CACHE / f"vectors-{name}.npz", embedder),
            summary=True, section_path=False)
        owners, texts = [], []
        for i, text in enumerate(chunks.text):
            for _, sentence in sentences(text):
                if len(sentence.split()) >= 4:
                    owners.append(i)
                    texts.append(KnowledgeIndex.embedding_text(corpus.titles[chunks.doc[i]],
                                                               sentence))
        print(f"{name}: {len(chunks.text)} chunks, {len(texts)} sentences", flush=True)
        svecs = quality.VectorCache(run.CACHE / f"sentences-{name}.npz", embedder).embed(texts)
        owner = np.array(owners)
        names = [p.name for p in corpus.pages]
        for variant, (mix, rerank_only, bm25) in VARIANTS.items():
            ranking = replace(DEFAULT_RANKING, document_bm25=bm25)
            r1 = r5 = mrr = 0.0
            for item, q in zip(questions, qvecs, strict=True):
                cos = chunks.matrix @ q
                best = np.full(len(cos), -1.0, dtype=np.float32)
                np.maximum.at(best, owner, svecs @ q)
                score = mix(cos, best)
                top = np.argsort(-(cos if rerank_only else score))[: 2 * fetch_size(10, ranking)]
                hits = [Hit(str(i), chunks.doc[i], 1, corpus.titles[chunks.doc[i]],
                            chunks.text[i], float(score[i])) for i in top]
                lexical = corpus.bm25.relative(item["q"], {h.document_id for h in hits})
                chosen = rank(item["q"], hits, 10, ranking, None, lexical)
                docs = list(dict.fromkeys(h.document_id for h in chosen))
                expected = names.index(item["doc"]) if item["doc"] in names else -1
                r1 += bool(docs) and docs[0] == expected
                r5 += expected in {h.document_id for h in chosen[:5]}
                mrr += 1 / (docs.index(expected) + 1) if expected in docs else 0.0
            n = len(questions)
            out.setdefault(variant, {})[name] = {
                "recall@1": round(r1 / n, 3), "recall@5": round(r5 / n, 3),
                "mrr@10": round(mrr / n, 3)}
            print(f"  {variant}: {out[variant][name]}", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
