"""Retrieval quality variants, measured in memory with the product's own parsing, chunking,
embedding and ranking code (exact nearest neighbours, like Chroma's index at these sizes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from knowledge.chunking import chunk_text
from knowledge.documents import UnsupportedDocument, parse_file
from knowledge.index import Hit, KnowledgeIndex
from knowledge.lexical import BM25
from knowledge.retrieval import (
    FeedbackBoosts,
    Ranking,
    Vote,
    boost_questions,
    feedback_boosts,
    fetch_size,
    fold,
    rank,
)


@dataclass
class Corpus:
    name: str
    pages: list[Path]
    titles: list[str]
    plain_titles: list[str]  # without the one-line summary
    texts: list[str]

    @cached_property
    def bm25(self) -> BM25[int]:
        """Over whole pages (title with summary, text), as `KnowledgeService` builds it."""
        return BM25({i: f"{t}\n{x}" for i, (t, x) in enumerate(zip(self.titles, self.texts))})


def load_corpus(name: str, pages: list[Path]) -> Corpus:
    kept, titles, plain, texts = [], [], [], []
    for page in pages:
        try:
            doc = parse_file(page)
        except UnsupportedDocument:
            continue
        kept.append(page)
        titles.append(doc.title)
        plain.append(doc.title.split(" — ")[0])
        texts.append(doc.text)
    return Corpus(name, kept, titles, plain, texts)


class VectorCache:
    """Embeddings by text hash, kept on disk so re-runs embed only what changed."""

    def __init__(self, path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
        self.path, self.embedder = path, embedder
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            data = np.load(path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items())
        for start in range(0, len(missing), 512):
            part = missing[start:start + 512]
            for (k, _), v in zip(part, self.embedder.embed([t for _, t in part]), strict=True):
                self.vectors[k] = np.asarray(v, dtype=np.float32)
            print(f"  embedded {min(start + 512, len(missing))}/{len(missing)}", flush=True)
            if start % 4096 == 3584:  # an interrupted run keeps most of its work
                self.save()
        if missing:
            self.save()
        return np.stack([self.vectors[k] for k in keys])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        np.savez(self.path, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))


@dataclass
class Chunks:
    doc: list[int]
    text: list[str]
    matrix: np.ndarray
    bm25: BM25[int] | None = None  # over chunks (by index): the full-index hybrid variant


def build_chunks(corpus: Corpus, embedder, cache: VectorCache, *, summary: bool,  # type: ignore[no-untyped-def]
                 section_path: bool) -> Chunks:
    max_tokens = min(embedder.max_tokens, 256) - 16  # as KnowledgeService._chunks
    doc_ids, texts, embedded = [], [], []
    for i, text in enumerate(corpus.texts):
        title = corpus.titles[i] if summary else corpus.plain_titles[i]
        for chunk in chunk_text(text, embedder.count_tokens, max_tokens=max_tokens,
                                overlap_tokens=max_tokens // 5, section_path=section_path):
            doc_ids.append(i)
            texts.append(chunk)
            embedded.append(KnowledgeIndex.embedding_text(title, chunk))
    return Chunks(doc_ids, texts, cache.embed(embedded))


def retrieve(corpus: Corpus, chunks: Chunks, question: str, qvec: np.ndarray,
             ranking: Ranking, boosts: dict[str, float] | None = None, k: int = 10) -> list[Hit]:
    """The product's ranking over exact nearest neighbours."""
    sims = chunks.matrix @ qvec
    top = np.argsort(-sims)[: 2 * fetch_size(k, ranking)]
    hits = [Hit(str(i), chunks.doc[i], 1, corpus.titles[chunks.doc[i]], chunks.text[i],
                float(sims[i])) for i in top]
    return rank(question, hits, k, ranking, boosts, _lexical(corpus, question, hits, ranking))


def _lexical(corpus: Corpus, question: str, hits: list[Hit],
             ranking: Ranking | None) -> dict[int, float] | None:
    """The candidates' documents' relative BM25 scores, as `KnowledgeService.search` has them."""
    if ranking is None or not ranking.document_bm25:
        return None
    return corpus.bm25.relative(question, {h.document_id for h in hits})


def simulate_feedback(corpus: Corpus, chunks: Chunks, questions: list[dict], qvecs: np.ndarray,
                      ranking: Ranking, paraphrases: dict[str, str], embedder,
                      raters: int = 3) -> dict:
    """Simulated ratings on half the questions: each of `raters` honest users asks every
    question of that half; the answer cites the top 3 chunks; 👍 when the expected page is the
    first hit, else 👎 with a correction: the expected page's passage nearest the question.
    As in the product (`KnowledgeService.recompute_boosts`), a 👎 does not lower a cited chunk
    that says what its correction says, and each boost applies to questions like the rated
    ones (`knowledge.retrieval.reach`); the same boosts applied to every question (the code
    before) are reported too. Then one user 👍s a wrong chunk for every question, 50 times
    each. Reports recall/MRR before and after on the rated half, on the rated half asked in
    other words (`paraphrases`: {question index: wording}) and on the other half."""
    from bot.services.grounding import supported

    names = [p.name for p in corpus.pages]
    rated = [i for i in range(len(questions)) if i % 2 == 0]
    votes = []
    for i in rated:
        expected = names.index(questions[i]["doc"]) if questions[i]["doc"] in names else -1
        cited = retrieve(corpus, chunks, questions[i]["q"], qvecs[i], ranking, k=3)
        good = bool(cited) and cited[0].document_id == expected
        own = [j for j, d in enumerate(chunks.doc) if d == expected]
        correction = "" if good or not own else \
            chunks.text[max(own, key=lambda j: float(chunks.matrix[j] @ qvecs[i]))]
        for user in range(raters):
            votes.append(Vote(user, 1 if good else -1, tuple(h.chunk_id for h in cited),
                              correction, questions[i]["q"]))

    def holds(chunk_id: str, correction: str) -> bool:
        return supported(correction, [chunks.text[int(chunk_id)]])

    votes = [v.sparing(holds) for v in votes]
    row = {questions[i]["q"]: n for n, i in enumerate(rated)}

    def stored(votes: list[Vote]) -> FeedbackBoosts:
        asked = boost_questions(votes)
        return FeedbackBoosts({cid: b for cid, (b, _, _) in feedback_boosts(votes).items()},
                              {cid: [row[q] for q in qs] for cid, qs in asked.items()},
                              qvecs[rated])

    honest = stored(votes)
    everywhere = dict(honest.values)
    attack = []
    for i in rated:
        fifth = retrieve(corpus, chunks, questions[i]["q"], qvecs[i], ranking, k=5)[-1:]
        attack += [Vote(999, 1, tuple(h.chunk_id for h in fifth),
                        question=questions[i]["q"])] * 50
    attacked = stored(votes + attack)
    para_idx = [i for i in rated if str(i) in paraphrases]
    para_questions = [dict(questions[i], q=paraphrases[str(i)]) for i in para_idx]
    para_vecs = np.array(embedder.embed([q["q"] for q in para_questions]), dtype=np.float32)

    def conditional(boosts: FeedbackBoosts):  # type: ignore[no-untyped-def]
        return lambda vector: boosts.for_question(vector, boosts.values)

    def halves(boosts) -> dict:  # type: ignore[no-untyped-def]
        out = {}
        for label, items, vecs in (
                ("rated", [questions[i] for i in rated], qvecs[rated]),
                ("rated, other words", para_questions, para_vecs),
                ("not rated", [questions[i] for i in range(len(questions)) if i % 2],
                 qvecs[[i for i in range(len(questions)) if i % 2]])):
            m = evaluate(corpus, chunks, items, vecs, ranking, boosts=boosts)
            out[label] = {k: m[k] for k in ("recall@1", "recall@5", "mrr@10")}
        return out

    return {"before": halves(None),
            "after honest ratings, boosts for every question (before)": halves(everywhere),
            "after honest ratings": halves(conditional(honest)),
            "after honest ratings + one account's 50 👍 per question on a wrong chunk":
                halves(conditional(attacked)),
            "paraphrases": len(para_questions),
            "paraphrase cosine to the rated question, median": round(float(np.median(
                [float(para_vecs[j] @ qvecs[i]) for j, i in enumerate(para_idx)])), 3),
            "largest boost": round(max(honest.values.values(), default=0.0), 4),
            "largest boost one account gave": round(max(
                (attacked.values[v.chunk_ids[0]] - honest.values.get(v.chunk_ids[0], 0.0)
                 for v in attack if v.chunk_ids and v.chunk_ids[0] in attacked.values),
                default=0.0), 4)}


def evaluate(corpus: Corpus, chunks: Chunks, questions: list[dict], qvecs: np.ndarray,
             ranking: Ranking | None, bm25_weight: float = 0.0, k: int = 5,
             boosts=None) -> dict:  # type: ignore[no-untyped-def]
    """recall@1/@5 and MRR@10 of the expected page among the documents of the top-k chunks
    (`ranking` None: the top k chunks by cosine, as before this change); `boosts`: {chunk id:
    boost}, or a function of the question's vector that gives them."""
    names = [p.name for p in corpus.pages]
    ranks = []
    for item, q in zip(questions, qvecs, strict=True):
        sims = chunks.matrix @ q
        n = fetch_size(10, ranking) if ranking else 10
        top = list(np.argsort(-sims)[:n])
        bonus: dict[int, float] = {}
        if bm25_weight and chunks.bm25 is not None:
            lexical = chunks.bm25.scores(item["q"])
            best = max(lexical.values(), default=1.0)
            for i in sorted(lexical, key=lambda i: -lexical[i])[:n]:
                if i not in top:
                    top.append(i)
            bonus = {i: bm25_weight * lexical.get(i, 0.0) / best for i in top}
        hits = [Hit(str(i), chunks.doc[i], 1, corpus.titles[chunks.doc[i]], chunks.text[i],
                    float(sims[i]) + bonus.get(i, 0.0)) for i in top]
        hits.sort(key=lambda h: -h.score)
        chosen = rank(item["q"], hits, 10, ranking, boosts(q) if callable(boosts) else boosts,
                      _lexical(corpus, item["q"], hits, ranking)) if ranking else hits[:10]
        docs: list[int] = []
        for pos, h in enumerate(chosen):
            if h.document_id not in docs and (ranking or pos < k or len(docs) < 10):
                docs.append(h.document_id)
        top5 = {h.document_id for h in chosen[:k]}
        expected = names.index(item["doc"]) if item["doc"] in names else -1
        r = docs.index(expected) + 1 if expected in docs else None
        ranks.append((r, expected in top5))
    n = len(questions)
    return {"recall@1": round(sum(r == 1 for r, _ in ranks) / n, 3),
            "recall@5": round(sum(hit for _, hit in ranks) / n, 3),
            "mrr@10": round(sum(1 / r for r, _ in ranks if r) / n, 3),
            "misses_at_5": [q["q"] for q, (_, hit) in zip(questions, ranks, strict=True) if not hit]}


VARIANTS: dict[str, tuple[dict, Ranking | None, float]] = {
    # name: (chunk text options, ranking, full-index BM25 weight)
    "dense (before)": ({"summary": False, "section_path": False}, None, 0.0),
    "+ one-line summary in the title": ({"summary": True, "section_path": False}, None, 0.0),
    "+ section path": ({"summary": True, "section_path": True}, None, 0.0),
}


def ranking_grid(base: Ranking) -> dict[str, tuple[Ranking, float]]:
    grid: dict[str, tuple[Ranking, float]] = {
        "diversity (1 chunk/doc)": (base, 0.0),
        "diversity (2 chunks/doc)": (replace(base, per_document=2), 0.0)}
    for share in (0.05, 0.1, 0.2):
        grid[f"diversity + document score {share}"] = (replace(base, document_share=share), 0.0)
    for w in (0.05, 0.1, 0.15, 0.2, 0.3):
        grid[f"diversity + rare-word bonus {w}"] = (replace(base, lexical_weight=w), 0.0)
    for w in (0.05, 0.1, 0.2):
        grid[f"diversity + BM25 (full index) {w}"] = (base, w)
    for w in (0.1, 0.15, 0.2, 0.3):
        grid[f"diversity + document BM25 {w}"] = (replace(base, document_bm25=w), 0.0)
    return grid


def follow_ups(corpus: Corpus, chunks: Chunks, items: list[dict], cache: VectorCache,
               ranking: Ranking) -> dict:
    """Follow-up questions ("and how do I remove it again?") after a first question, searched
    alone; with the texts folded (the bot before: previous question + follow-up); and with the
    vectors folded (`knowledge.retrieval.fold`, the bot now), each where the bot's
    `follow_up_context` folds."""
    from bot.services.chat import ChatService
    from bot.storage.store import Turn

    contexts = [ChatService.follow_up_context(i["follow"], [Turn("user", i["first"])])
                for i in items]
    alone = cache.embed([i["follow"] for i in items])
    previous = cache.embed([i["first"] for i in items])
    texts = cache.embed([f"{c} {i['follow']}" if c else i["follow"]
                         for c, i in zip(contexts, items, strict=True)])
    vectors = np.array([fold(v, p) if c else v for v, p, c in zip(alone, previous, contexts,
                                                                   strict=True)],
                       dtype=np.float32)
    questions = [{"q": i["follow"], "doc": i["doc"]} for i in items]
    out: dict = {"questions": len(items), "folded": sum(map(bool, contexts))}
    for label, qvecs in (("alone", alone), ("texts folded (before)", texts),
                         ("vectors folded (now)", vectors)):
        m = evaluate(corpus, chunks, questions, qvecs, ranking)
        out[label] = {k: m[k] for k in ("recall@1", "recall@5", "mrr@10")}
    return out
