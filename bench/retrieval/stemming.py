"""Does stemming the BM25 words help `kb search`? Measured on both corpora, with the product's
ranking at several BM25 weights and candidate pool sizes, words as they are against Snowball
(Porter 2) stems ("empties" and "empty" both become "empti").

Usage: pip install snowballstemmer; python bench/retrieval/stemming.py
Needs the corpora of run.py and reuses its cached vectors (run.py embeds them on first use).
Not kept in the product: see the README (Retrieval).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import quality  # noqa: E402
import run  # noqa: E402

import knowledge.lexical as lexical  # noqa: E402
from knowledge.embeddings import load_embedder  # noqa: E402
from knowledge.lexical import BM25  # noqa: E402
from knowledge.retrieval import DEFAULT_RANKING  # noqa: E402


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    import snowballstemmer

    stem = lru_cache(maxsize=None)(snowballstemmer.stemmer("english").stemWord)
    plain = lexical.tokens
    embedder = load_embedder(None, run.ROOT / ".cache" / "models" / "embeddings")
    data = {}
    for name, (pages, qfile, _) in run.CORPORA.items():
        corpus = quality.load_corpus(name, pages())
        questions = json.loads((run.HERE / qfile).read_text())
        cache = quality.VectorCache(run.CACHE / f"vectors-{name}.npz", embedder)
        qvecs = np.array(embedder.embed([q["q"] for q in questions]), dtype=np.float32)
        chunks = quality.build_chunks(corpus, embedder, cache, summary=True, section_path=False)
        data[name] = (corpus, questions, qvecs, chunks)
    for stemmed, candidates in itertools.product((False, True), (4, 8)):
        lexical.tokens = (lambda text: [stem(w) for w in plain(text)]) if stemmed else plain
        for corpus, *_ in data.values():
            corpus.__dict__["bm25"] = BM25({i: f"{t}\n{x}" for i, (t, x)
                                            in enumerate(zip(corpus.titles, corpus.texts))})
        for weight in (0.2, 0.3, 0.4):
            ranking = replace(DEFAULT_RANKING, document_bm25=weight, candidates=candidates)
            row = []
            for name, (corpus, questions, qvecs, chunks) in data.items():
                m = quality.evaluate(corpus, chunks, questions, qvecs, ranking)
                row.append(f"{name} {m['recall@1']:.3f} / {m['recall@5']:.3f} / "
                           f"{m['mrr@10']:.3f}")
            print(f"{'stemmed' if stemmed else 'words  '} candidates {candidates} "
                  f"BM25 {weight}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
