"""Ranking retrieved chunks: one chunk per document, and feedback boosts that are bounded,
count each user once, are recorded, and can be removed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bot.config import Settings
from bot.services.knowledge import KnowledgeService
from bot.storage.store import UserInfo
from bot.wiring import Services, build_services
from knowledge.index import Hit
from knowledge.lexical import BM25, CorpusStats
from knowledge.retrieval import (
    BOOST_USERS,
    MAX_BOOST,
    FeedbackBoosts,
    Ranking,
    Vote,
    boost_questions,
    feedback_boosts,
    fetch_size,
    fold,
    lexical_overlap,
    rank,
    reach,
)
from tests.fakes import FakeEmbedder


def hit(doc: int, chunk: int, score: float, text: str = "text") -> Hit:
    return Hit(f"{doc}:1:{chunk}", doc, 1, f"Doc {doc}", text, score)


def test_one_chunk_per_document_makes_five_hits_five_candidates() -> None:
    hits = [hit(1, 0, 0.9), hit(1, 1, 0.89), hit(1, 2, 0.88), hit(2, 0, 0.7), hit(3, 0, 0.6)]
    top = rank("q", hits, 3, Ranking(per_document=1))
    assert [h.document_id for h in top] == [1, 2, 3]
    assert [h.score for h in top] == [0.9, 0.7, 0.6]  # cosine kept for the thresholds downstream
    assert [h.document_id for h in rank("q", hits, 3, Ranking(per_document=2))] == [1, 1, 2]
    # No cap (answering): plain similarity order.
    assert [h.chunk_id for h in rank("q", hits, 5, Ranking(per_document=5))] == [
        h.chunk_id for h in hits]
    # A small knowledge base with fewer documents than k: the best documents' other chunks.
    assert [h.chunk_id for h in rank("q", hits[:4], 4, Ranking(per_document=1))] == [
        "1:1:0", "2:1:0", "1:1:1", "1:1:2"]


def test_more_candidates_only_when_the_ranking_can_use_them() -> None:
    assert fetch_size(5, Ranking(per_document=1)) == 20  # the cap needs other documents' chunks
    assert fetch_size(6, Ranking(per_document=6)) == 6   # answering: the nearest chunks, as is
    assert fetch_size(6, Ranking(per_document=6, lexical_weight=0.1)) == 24


def test_document_score_and_rare_words_reorder_near_ties() -> None:
    hits = [hit(1, 0, 0.80), hit(2, 0, 0.79), hit(2, 1, 0.70)]
    assert rank("q", hits, 2, Ranking())[0].document_id == 1
    assert rank("q", hits, 2, Ranking(document_share=0.1))[0].document_id == 2
    words = [hit(1, 0, 0.80, "how to remove rows"), hit(2, 0, 0.79, "TRUNCATE empties a table")]
    assert lexical_overlap("truncate a table", words[1].text) > lexical_overlap(
        "truncate a table", words[0].text)
    assert rank("truncate a table", words, 1, Ranking(lexical_weight=0.1))[0].document_id == 2


def test_bm25_prefers_rare_shared_words_and_scores_only_what_is_asked() -> None:
    docs = {1: "DELETE removes rows from a table, one by one",
            2: "TRUNCATE quickly empties a table",
            3: "CREATE VIEW defines a view"}
    bm25 = BM25(docs)
    scores = bm25.scores("empty whole table quickly")
    assert set(scores) == {1, 2}  # 3 shares no word
    assert scores[2] > scores[1]  # "quickly" is rarer than "table"
    assert bm25.scores("empty whole table quickly", keys=[1, 3]) == {1: scores[1]}
    assert bm25.relative("empty whole table quickly", [1, 2]) == {
        1: pytest.approx(scores[1] / scores[2]), 2: 1.0}
    assert bm25.relative("nothing shared", [1, 2]) == {}


def test_document_bm25_reorders_candidates_without_changing_their_scores() -> None:
    hits = [hit(1, 0, 0.80), hit(2, 0, 0.75)]
    assert rank("q", hits, 2, Ranking(document_bm25=0.2))[0].document_id == 1  # no lexical
    top = rank("q", hits, 2, Ranking(document_bm25=0.2), lexical={2: 1.0, 1: 0.5})
    assert [h.document_id for h in top] == [2, 1] and top[0].score == 0.75
    assert rank("q", hits, 2, Ranking(), lexical={2: 1.0})[0].document_id == 1  # weight 0
    assert fetch_size(6, Ranking(per_document=6, document_bm25=0.2)) == 24


def test_search_ranks_by_the_knowledge_base_words_and_follows_changes(services: Services) -> None:
    knowledge: KnowledgeService = services.knowledge
    knowledge.add_text("Rows", "How do I remove the rows of a table? Delete them.", "t:a", "t")
    b = knowledge.add_text("Emptying", "Truncate: everything gone at once.", "t:b", "t")
    for i, verb in enumerate(["copy", "rename", "lock", "index", "grant", "vacuum"]):
        knowledge.add_text(verb.title(), f"How do I {verb} a table? Use {verb.upper()}.",
                           f"t:{i}", "t")
    question = "How do I truncate a table?"
    # Dense alone, the page with the question's everyday words wins; its one rare word, which
    # BM25 weighs by how rare it is in this knowledge base, brings the right page up.
    knowledge.ranking = Ranking(per_document=1)
    assert knowledge.search(question, 1)[0].document_id != b.document.id
    knowledge.ranking = Ranking(per_document=1, document_bm25=1.0)
    assert knowledge.search(question, 1)[0].document_id == b.document.id
    # The page changes (here or in another process): the index follows the database.
    knowledge.add_text("Emptying", "Nothing to see here.", "t:b", "t")
    assert knowledge._bm25({b.document.id}).scores("truncate") == {}


def test_bm25_of_a_few_texts_with_the_collection_statistics_scores_as_over_all() -> None:
    docs = {1: "DELETE removes rows from a table, one by one",
            2: "TRUNCATE quickly empties a table",
            3: "CREATE VIEW defines a view",
            4: "VACUUM rebuilds the table file"}
    whole = BM25(docs)
    stats = CorpusStats.from_json(json.loads(json.dumps(CorpusStats.of(whole.tf.values())
                                                        .to_json())))
    few = BM25({k: docs[k] for k in (1, 2)}, stats=stats)
    question = "empty whole table quickly"
    assert few.scores(question) == pytest.approx(whole.scores(question, keys=[1, 2]))
    # Without the collection's statistics, "table" (in 3 of 4 texts) would look as rare as
    # "quickly": scores differ, which is why the statistics are the whole knowledge base's.
    assert BM25({k: docs[k] for k in (1, 2)}).scores(question) != few.scores(question)


def test_search_statistics_are_shared_with_other_processes_and_follow_changes(
        services: Services) -> None:
    knowledge: KnowledgeService = services.knowledge
    ids = [knowledge.add_text(w.title(), f"How do I {w} a table? Use {w.upper()}.", f"t:{w}",
                              "t").document.id for w in ("truncate", "copy", "lock")]
    knowledge.ranking = Ranking(per_document=1, document_bm25=1.0)
    knowledge.search("How do I truncate a table?", 1)
    saved = knowledge._stats_file
    assert saved is not None and json.loads(saved.read_text())["stats"]["texts"] == 3
    # Another process (a `kb search`) reads the saved statistics and only its candidates.
    other = KnowledgeService(knowledge.store, knowledge.index, knowledge.index.embedder,
                             ranking=knowledge.ranking, cache_dir=saved.parent)
    read: list[object] = []
    original = other.store.document_texts

    def document_texts(ids: object = None):  # type: ignore[no-untyped-def]
        read.append(ids)
        return original(ids)  # type: ignore[arg-type]

    other.store.document_texts = document_texts  # type: ignore[method-assign]
    try:
        assert other.search("How do I truncate a table?", 1)[0].document_id == ids[0]
        assert read and None not in read
        # The knowledge base changes: the statistics are counted again, and saved.
        knowledge.add_text("Grant", "How do I grant a table? Use GRANT.", "t:grant", "t")
        other.search("How do I truncate a table?", 1)
        assert None in read
        assert json.loads(saved.read_text())["stats"]["texts"] == 4
        # An unreadable file is counted again rather than trusted.
        saved.write_text("{not json")
        other._stats = None
        read.clear()
        assert other.search("How do I truncate a table?", 1)[0].document_id == ids[0]
        assert None in read and json.loads(saved.read_text())["stats"]["texts"] == 4
    finally:
        del other.store.document_texts


def test_a_short_lived_search_reads_the_index_snapshot_and_follows_other_processes(
        settings: Settings, embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    if settings.chroma_url:
        pytest.skip("a Chroma server is searched where it runs: no snapshot")
    import bot.wiring
    import knowledge.snapshot
    from knowledge.snapshot import Snapshot

    bot_process = build_services(settings, embedder=embedder, with_chat=False, seed=False)
    for i, (title, text) in enumerate([("Cats", "The office cat is called Miso."),
                                       ("Dogs", "Dogs are welcome on the ground floor."),
                                       ("Parking", "There are 12 parking spaces.")]):
        bot_process.knowledge.add_text(title, text, f"t:{i}", "t")
    question = "what is the office cat called"
    expected = bot_process.knowledge.index.search(question, 3)
    opened: list[str] = []
    real_open = bot.wiring.open_chroma

    def open_chroma(url: str, path: object):  # type: ignore[no-untyped-def]
        opened.append(url)
        return real_open(url, path)  # type: ignore[arg-type]

    monkeypatch.setattr(bot.wiring, "open_chroma", open_chroma)

    def cli_search(query: str = question) -> list[Hit]:
        """A `kb search`: a new process's services, one search, closed."""
        cli = build_services(settings, embedder=embedder, with_chat=False, seed=False,
                             short_lived=True)
        try:
            return cli.knowledge.index.search(query, 3)
        finally:
            cli.close()

    def same(hits: list[Hit], reference: list[Hit]) -> bool:
        return [(h.chunk_id, h.text) for h in hits] == [(h.chunk_id, h.text) for h in
                                                         reference] and \
            [h.score for h in hits] == pytest.approx([h.score for h in reference], abs=1e-5)

    # The first asks Chroma and leaves a snapshot; the next ones never open Chroma.
    assert same(cli_search(), expected) and opened == [""]
    snapshot = settings.chroma_dir / "snapshot.npz"
    assert snapshot.exists()
    assert same(cli_search(), expected) and opened == [""]
    assert [h.chunk_id for h in cli_search("parking spaces")][0] == \
        bot_process.knowledge.index.search("parking spaces", 1)[0].chunk_id
    assert opened == [""]
    # Another process writes: the snapshot is behind, so Chroma answers (and a new one is taken).
    bot_process.knowledge.add_text("Café", "The office café sells cat-shaped biscuits.", "t:c",
                                   "t")
    fresh = bot_process.knowledge.index.search("the office café sells biscuits", 3)
    assert same(cli_search("the office café sells biscuits"), fresh) and len(opened) == 2
    assert same(cli_search("the office café sells biscuits"), fresh) and len(opened) == 2
    # An unreadable snapshot is not trusted: Chroma answers, and a good one replaces it.
    snapshot.write_bytes(b"not a snapshot")
    assert same(cli_search(), bot_process.knowledge.index.search(question, 3))
    assert len(opened) == 3
    assert same(cli_search(), bot_process.knowledge.index.search(question, 3))
    assert len(opened) == 3
    # Past the size a snapshot is kept for, only the size is noted, and Chroma answers each time.
    monkeypatch.setattr(knowledge.snapshot, "MAX_CHUNKS", 2)
    bot_process.knowledge.add_text("Bikes", "The bike room holds 30 bicycles.", "t:b", "t")
    cli_search()
    noted = Snapshot.read(snapshot, bot_process.knowledge.index._shared.generation())
    assert noted is not None and not noted.complete and not noted.chunks
    written = snapshot.stat().st_mtime_ns
    assert same(cli_search(), bot_process.knowledge.index.search(question, 3))
    assert len(opened) == 5 and snapshot.stat().st_mtime_ns == written
    bot_process.close()


def test_boosts_are_bounded_and_count_each_user_once() -> None:
    one_user = [Vote(7, 1, ("1:1:0",))] * 500
    (boost, up, down), = feedback_boosts(one_user).values()
    assert (up, down) == (1, 0)
    assert boost == pytest.approx(MAX_BOOST * math.tanh(1 / BOOST_USERS))
    crowd = [Vote(u, 1, ("1:1:0",)) for u in range(1000)]
    assert 0 < feedback_boosts(crowd)["1:1:0"][0] <= MAX_BOOST
    # A user who rated both ways nets out; opposing users cancel.
    mixed = [Vote(1, 1, ("a",)), Vote(1, -1, ("a",)), Vote(2, 1, ("b",)), Vote(3, -1, ("b",))]
    assert feedback_boosts(mixed) == {}
    assert feedback_boosts([Vote(4, -1, ("c",))])["c"][0] < 0


def _answer(services: Services, chunk_ids: list[str],
            question: str = "Is parking free for guests?") -> int:
    conv = services.store.active_conversation(1)
    asked = services.store.add_message(conv, "user", question)
    return services.store.add_message(conv, "assistant", "an answer", chunk_ids=chunk_ids,
                                      question_id=asked)


def _two_parking_pages(knowledge: KnowledgeService) -> tuple[int, int]:
    """Two pages close in similarity for "Is parking free for guests?" (0.81 and 0.78 with the
    fake embedder), so that ratings decide; their document ids, the nearer first."""
    knowledge.ranking = Ranking(per_document=1)
    a = knowledge.add_text("Parking", "Parking is free for guests at the back.", "t:a", "test")
    b = knowledge.add_text("Parking", "Parking is free for guests, ask at the desk.", "t:b",
                           "test")
    return a.document.id, b.document.id


def _prefer(services: Services, winner: str, loser: str, users: range,
            question: str = "Is parking free for guests?") -> None:
    """Each of `users` 👍 an answer to `question` citing `winner`, and 👎 with a correction one
    citing `loser`."""
    for user in users:
        services.feedback.rate(_answer(services, [winner], question), UserInfo(user), 1)
        down = _answer(services, [loser], question)
        services.feedback.rate(down, UserInfo(user), -1)
        services.feedback.correct(down, UserInfo(user), "Parking costs 5 euros.")


def test_ratings_move_retrieval_and_reset_undoes_it(services: Services) -> None:
    knowledge: KnowledgeService = services.knowledge
    a, b = _two_parking_pages(knowledge)
    query = "Is parking free for guests?"
    before = [h.document_id for h in knowledge.search(query, 2)]
    assert before[0] == a
    loser, winner = f"{a}:1:0", f"{b}:1:0"
    _prefer(services, winner, loser, range(11, 15))
    services.feedback.rate(_answer(services, [loser]), UserInfo(15), -1)  # no correction: no vote
    summary = knowledge.recompute_boosts("test")
    assert summary == {"chunks": 2, "raised": 1, "lowered": 1}
    boosts = {b.chunk_id: b for b in knowledge.boosts.all()}
    assert (boosts[winner].up, boosts[loser].down) == (4, 4)
    knowledge._boost_map = (-1e9, FeedbackBoosts())  # skip the cache's minute
    after = knowledge.search(query, 2)
    assert [h.document_id for h in after] == [b, a]
    assert "boosts" in [e.action for e in services.store.audit_entries(5)]

    assert knowledge.boosts.reset("test") == 2
    knowledge._boost_map = (-1e9, FeedbackBoosts())
    assert [h.document_id for h in knowledge.search(query, 2)] == before


def test_a_boost_applies_to_questions_like_the_rated_one(services: Services) -> None:
    knowledge: KnowledgeService = services.knowledge
    a, b = _two_parking_pages(knowledge)
    rated = "Is parking free for guests?"
    # Cosines to the rated question with the fake embedder: 0.91 (the same question in other
    # words) and 0.60 (another question, on which the two pages are 0.02 apart).
    same, other = "Is parking free for guests today?", "Where is guest parking, is it free?"
    first = {q: knowledge.search(q, 2)[0].document_id for q in (rated, same, other)}
    assert first == {rated: a, same: a, other: a}
    loser, winner = f"{a}:1:0", f"{b}:1:0"
    _prefer(services, winner, loser, range(31, 35), rated)
    knowledge.recompute_boosts("test")
    assert {b.chunk_id: b.questions for b in knowledge.boosts.all()} == {
        winner: (rated,), loser: (rated,)}
    knowledge._boost_map = (-1e9, FeedbackBoosts())
    first = {q: knowledge.search(q, 2)[0].document_id for q in (rated, same, other)}
    assert first == {rated: b, same: b, other: a}
    # The same boosts for every question (as computed before they had questions) would have
    # turned the other question's ranking too.
    knowledge.boosts.recompute("test")
    assert all(not b.questions for b in knowledge.boosts.all())
    knowledge._boost_map = (-1e9, FeedbackBoosts())
    assert knowledge.search(other, 2)[0].document_id == b


def test_boosts_are_read_again_only_when_they_changed(services: Services) -> None:
    knowledge: KnowledgeService = services.knowledge
    a, b = _two_parking_pages(knowledge)
    _prefer(services, f"{b}:1:0", f"{a}:1:0", range(41, 44))
    reads: list[int] = []
    feedback = knowledge.boosts.feedback
    knowledge.boosts.feedback = lambda: reads.append(1) or feedback()  # type: ignore[method-assign]

    def search_after_a_minute() -> int:
        knowledge._boost_map = (-1e9, knowledge._boost_map[1])  # the minute has passed
        return knowledge.search("Is parking free for guests?", 2)[0].document_id

    assert search_after_a_minute() == a and len(reads) == 1  # nothing rated yet: read once
    knowledge.recompute_boosts("test")  # as the nightly job does, from another process
    assert search_after_a_minute() == b and len(reads) == 2
    assert search_after_a_minute() == b and len(reads) == 2  # unchanged: not read again
    # One vector per distinct question, shared by the chunks; float16 on disk, float32 here.
    boosts = knowledge._current_boosts()
    assert boosts.vectors.shape == (1, FakeEmbedder.dim)
    assert boosts.questions == {f"{b}:1:0": [0], f"{a}:1:0": [0]}
    assert float(boosts.vectors[0] @ np.asarray(FakeEmbedder().embed(
        ["Is parking free for guests?"])[0], dtype=np.float32)) == pytest.approx(1, abs=1e-3)
    knowledge.boosts.reset("test")
    assert search_after_a_minute() == a and len(reads) == 3


def test_reach_is_bounded_and_follows_the_nearest_rated_question() -> None:
    assert [reach(s) for s in (0.2, 0.6, 0.7, 0.8, 0.95)] == pytest.approx([0, 0, 0.5, 1, 1])
    boosts = FeedbackBoosts({"c": 0.04, "d": -0.02}, {"c": [0, 1]},
                            np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    assert boosts.for_question([0.0, 1.0], ["c", "d", "e"]) == pytest.approx(
        {"c": 0.04, "d": -0.02})
    assert boosts.for_question([math.sqrt(0.5), math.sqrt(0.5)], ["c"]) == \
        pytest.approx({"c": 0.04 * reach(math.sqrt(0.5))})
    assert boosts.for_question([-1.0, 0.0], ["c", "d"]) == pytest.approx({"d": -0.02})
    assert FeedbackBoosts({"c": 0.04}, {"c": [1]}, boosts.vectors).for_question(
        [1.0, 0.0], ["c"]) == {}  # its one question is the other one
    # Questions are kept per chunk, those most users asked first, whitespace aside.
    votes = [Vote(1, 1, ("c",), question="Where  is it?"), Vote(2, 1, ("c",),
             question="Where is it?"), Vote(2, 1, ("c", "d"), question="Open when?"),
             Vote(3, 1, ("d",))]
    assert boost_questions(votes) == {"c": ["Where is it?", "Open when?"], "d": ["Open when?"]}
    assert boost_questions(votes, limit=1)["c"] == ["Where is it?"]


def test_a_correction_spares_the_cited_chunk_that_says_it(services: Services) -> None:
    knowledge: KnowledgeService = services.knowledge
    right = knowledge.add_text("Parking", "Guests park for free behind building C.", "t:p", "t")
    wrong = knowledge.add_text("Bikes", "Bicycles go in the bike room downstairs.", "t:b", "t")
    r, w = f"{right.document.id}:1:0", f"{wrong.document.id}:1:0"
    for user in (21, 22):  # the answer cited both excerpts and still got it wrong
        down = _answer(services, [w, r])
        services.feedback.rate(down, UserInfo(user), -1)
        services.feedback.correct(down, UserInfo(user), "Guests park for free behind building C")
    # A third user's correction says something no excerpt says: both cited chunks lose.
    down = _answer(services, [w, r])
    services.feedback.rate(down, UserInfo(23), -1)
    services.feedback.correct(down, UserInfo(23), "Parking costs 5 euros an hour.")
    assert knowledge.recompute_boosts("test") == {"chunks": 2, "raised": 0, "lowered": 2}
    boosts = {b.chunk_id: b for b in knowledge.boosts.all()}
    assert (boosts[w].down, boosts[r].down) == (3, 1)
    assert boosts[w].boost < boosts[r].boost < 0
    # Counting every cited chunk alike (the store alone, no texts) lowers them equally.
    knowledge.boosts.recompute("test")
    boosts = {b.chunk_id: b for b in knowledge.boosts.all()}
    assert (boosts[w].down, boosts[r].down) == (3, 3)
    # A 👍 is never thinned, whatever its text.
    assert Vote(1, 1, (r, w), "x").sparing(lambda c, t: True).chunk_ids == (r, w)


def test_fold_adds_the_previous_question_at_a_weight() -> None:
    folded = fold([1.0, 0.0], [0.0, 1.0], weight=0.5)
    assert folded == pytest.approx([1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25)])
    assert fold([1.0, 0.0], [0.0, 1.0], weight=0.0) == [1.0, 0.0]


class MapEmbedder:
    """Chosen unit vectors: the follow-up alone is nearest the wrong drop page."""

    max_tokens = 256
    VECTORS = {"Views\nA view.": [1.0, 0.0, 0.0], "Dropping views\nDrop a view.": [0.6, 0.8, 0.0],
               "Dropping tables\nDrop a table.": [0.0, 0.9, math.sqrt(1 - 0.81)],
               "remove it": [0.0, 1.0, 0.0], "make a view": [1.0, 0.0, 0.0]}

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.VECTORS[t] for t in texts]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_a_follow_up_is_searched_with_the_previous_question_folded_in(settings) -> None:
    svc = build_services(settings, with_chat=False, embedder=MapEmbedder(), seed=False)
    for title, text in (("Views", "A view."), ("Dropping views", "Drop a view."),
                        ("Dropping tables", "Drop a table.")):
        svc.knowledge.add_text(title, text, f"t:{title}", "test")
    assert svc.knowledge.search("remove it", 1)[0].title == "Dropping tables"
    hits = svc.knowledge.search("remove it", 3, context="make a view")
    assert [h.title for h in hits] == ["Dropping views", "Dropping tables", "Views"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # fold(remove it, make a view) · page
    svc.close()
