"""What users taught (`bot.services.lessons`): a 👎 with the right answer puts the knowledge
base's sentence that backs it first the next time the question is asked; lies, rejected
corrections and lone accounts do not move answers."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from bot.services.lessons import Lessons
from bot.storage.models import Correction
from bot.storage.store import UserInfo
from bot.storage.training import HELD, REJECTED
from bot.wiring import Services
from tests.fakes import FakeChatModel, FakeEmbedder

Q = "What do I pay for storage space?"
LOCKER = "A locker costs 12 euros per month."


class Source:
    def __init__(self, *rows: tuple[str, str, int, int]) -> None:
        self.rows = list(rows)

    def teachings(self, limit: int = 5000) -> list[tuple[str, str, int, int]]:
        return self.rows[:limit]


def recall(*rows: tuple[str, str, int, int], question: str = Q) -> list[tuple[str, float]]:
    lessons = Lessons(Source(*rows), FakeEmbedder(), min_similarity=0.8)
    return [(t.text, t.score) for t in lessons.recall(question)]


def test_each_user_counts_once_per_text_and_corrections_outvote_a_wrong_thumbs_up() -> None:
    wrong = "A day pass costs 14 euros."
    # newest first: user 1 said 👍 three times; one vote of a newcomer, who weighs 0.5
    assert recall((Q, wrong, 1, 1), (Q, wrong, 1, 1), (Q, wrong, 1, 1)) == [(wrong, 0.5)]
    # users 2 and 3 said 👎 and corrected it: they agree on the locker (2/3 each), user 1
    # disagreed with both on the day pass (1/3)
    assert recall((Q, LOCKER, 2, 1), (Q, LOCKER, 3, 1), (Q, wrong, 2, -1), (Q, wrong, 3, -1),
                  (Q, wrong, 1, 1)) == [(LOCKER, 1.333)]  # the wrong text nets -1: not taught
    # a user's newest word counts: 👍 then changed to 👎
    assert recall((Q, wrong, 1, -1), (Q, wrong, 1, 1)) == []


def test_a_rater_who_keeps_disagreeing_with_everyone_cannot_cancel_an_honest_thumbs_up() -> None:
    """Two 👍 and two 👎 on the same answer: a tie by heads, which had meant "not taught". Users
    7 and 8 have 👎-ed what everyone else found right three times before (user 8 once
    agreed), users 1 and 2 have agreed with the others; so the 👍s carry it."""
    others = [(f"Question {n}?", f"Answer {n}.", u, v) for n in range(3)
              for u, v in ((3, 1), (4, 1), (7, -1), (8, -1))]
    others += [("Question 3?", "Answer 3.", u, 1) for u in (3, 8)]
    history = [(f"Question {n}?", f"Answer {n}.", u, 1) for n in range(4, 6) for u in (1, 2, 5)]
    tie = [(Q, LOCKER, 1, 1), (Q, LOCKER, 2, 1), (Q, LOCKER, 7, -1), (Q, LOCKER, 8, -1)]
    lessons = Lessons(Source(*tie, *others, *history), FakeEmbedder(), min_similarity=0.8)
    assert [t.text for t in lessons.recall(Q)] == [LOCKER]
    # (agreed + 1) / (compared + 2), the tie itself compared too: 0 of 4, 1 of 5, 2 of 3
    assert (lessons.weight(7), lessons.weight(8), lessons.weight(1)) == (1 / 6, 2 / 7, 3 / 5)
    assert lessons.weight(99) == 0.5  # never compared with anyone
    # by heads alone (everyone a newcomer) it is a tie, and nothing is taught
    assert recall(*tie) == []
    # the same history the other way round: the 👍s came from the ones everyone disagrees with
    flipped = [(q, t, u, -v) for q, t, u, v in tie]
    assert Lessons(Source(*flipped, *others, *history), FakeEmbedder(),
                   min_similarity=0.8).recall(Q) == []


def test_only_questions_meaning_the_same_recall_a_lesson() -> None:
    assert recall((Q, LOCKER, 2, 1), question="What do I pay for storage space ?") \
        == [(LOCKER, 0.5)]
    assert recall((Q, LOCKER, 2, 1), question="When does the building open?") == []
    off = Lessons(Source((Q, LOCKER, 2, 1)), FakeEmbedder(), min_similarity=0)
    assert off.recall(Q) == []


def lockers_and_passes(services: Services) -> None:
    services.knowledge.add_text("Prices", "A day pass costs 14 euros. Coffee is free for "
                                "members. " + LOCKER, source="test:prices", actor="test")
    services.chat.limits = replace(services.chat.limits, abstain_on_unknown_terms=False)


def ask_and_correct(services: Services, fake_model: FakeChatModel, user: UserInfo,
                    correction: str) -> int:
    fake_model.queue("A day pass costs 14 euros.")
    reply = services.chat.answer(user.id, user, Q)
    services.feedback.rate(reply.message_id, user, -1)
    assert services.feedback.correct(reply.message_id, user, correction)
    assert services.chat.lessons is not None
    services.chat.lessons.forget_cache()
    return reply.message_id


def test_a_correction_the_knowledge_base_backs_leads_the_evidence_next_time(
        services: Services, fake_model: FakeChatModel) -> None:
    lockers_and_passes(services)
    fake_model.queue("A day pass costs 14 euros.")
    before = services.chat.answer(1, UserInfo(1), Q)
    assert before.grounding == "no_knowledge"  # retrieval finds nothing for these words

    ask_and_correct(services, fake_model, UserInfo(2), "Lockers are 12 euros a month.")
    fake_model.queue("A locker costs 12 euros per month.")
    after = services.chat.answer(3, UserInfo(3), Q)  # someone else, another chat
    assert after.evidence[0].text == LOCKER  # found by the correction's words, put first
    assert after.text == LOCKER and after.grounding in ("verified", "extractive")
    assert LOCKER in fake_model.calls[-1][-1]["content"]


def test_lies_and_rejected_corrections_teach_nothing(
        services: Services, fake_model: FakeChatModel) -> None:
    lockers_and_passes(services)
    fake_model.queue("A day pass costs 14 euros.")
    before = services.chat.answer(1, UserInfo(1), Q).evidence
    assert before == []

    for attacker in range(900, 904):  # nothing in the knowledge base backs it
        ask_and_correct(services, fake_model, UserInfo(attacker), "Storage costs 59 euros.")
    fake_model.queue("A day pass costs 14 euros.")
    assert services.chat.answer(5, UserInfo(5), Q).evidence == before

    message_id = ask_and_correct(services, fake_model, UserInfo(6), LOCKER)
    with services.db.read() as session:
        correction_id = session.scalar(select(Correction.id)
                                       .where(Correction.message_id == message_id))
    services.store.review_correction(correction_id, REJECTED, actor="admin")
    services.chat.lessons.forget_cache()
    fake_model.queue("A day pass costs 14 euros.")
    assert services.chat.answer(7, UserInfo(7), Q).evidence == before
    services.store.review_correction(correction_id, HELD + "repeated", actor="nightly")
    services.chat.lessons.forget_cache()
    fake_model.queue("A day pass costs 14 euros.")
    assert services.chat.answer(8, UserInfo(8), Q).evidence == before


def test_a_taught_answer_stands_though_the_question_uses_words_the_kb_never_does(
        services: Services, fake_model: FakeChatModel) -> None:
    """"Storage" and "space" are nowhere in the knowledge base, which alone would mean "I don't
    know"; a user taught that the locker sentence answers this question."""
    lockers_and_passes(services)
    ask_and_correct(services, fake_model, UserInfo(2), "Lockers are 12 euros a month.")
    services.chat.limits = replace(services.chat.limits, abstain_on_unknown_terms=True)
    assert services.chat.retriever.uncovered(Q, "en")  # words the KB never uses
    fake_model.queue("A locker costs 12 euros per month.")
    after = services.chat.answer(3, UserInfo(3), Q)
    assert after.evidence and after.evidence[0].text == LOCKER
    assert after.text == LOCKER


def test_word_coverage_holds_while_another_thread_changes_the_vocabulary() -> None:
    """Answers are prepared on several threads: one rebuilding the knowledge base's word matrix
    (which forgets words the knowledge base does not have) must not drop the words another is
    in the middle of using."""
    import threading

    from knowledge.evidence import Coverage
    from tests.fakes import FakeEmbedder

    coverage: Coverage

    class Interrupted(FakeEmbedder):
        """While embedding "newword", another thread rebuilds the vocabulary (and is given
        0.3 s to finish: all of it without the lock, none of it with)."""

        def embed(self, texts: list[str]) -> list[list[float]]:
            if "newword" in texts:
                curator = threading.Thread(
                    target=lambda: coverage._vocabulary_matrix({"heating", "desk"}))
                curator.start()
                curator.join(0.3)
            return super().embed(texts)

    coverage = Coverage(Interrupted())  # type: ignore[arg-type]
    coverage.related("sauna", ["heating"])  # "sauna" cached, and not a knowledge-base word
    coverage.related("desk", ["heating"])
    assert coverage.related("desk", ["sauna", "newword"]) >= 0.0  # no KeyError: "sauna"
