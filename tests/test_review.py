"""Reviewing 👎 answers: triage, a correction into the knowledge base (audited, undoable), and
the corrections the nightly screen holds back from training until an admin decides."""

from __future__ import annotations

from dataclasses import replace

from bot.services.grounding import supported
from bot.services.review import Cause, triage
from bot.storage.store import UserInfo
from bot.storage.training import TrainingStore
from bot.wiring import Services
from tests.botapi import BotAPIEmulator
from tuning.dataset import collect_feedback

ADMIN, STRANGER = 42, 666
PLANS = "The Basic plan costs €12 per month and includes 3 users."


def test_supported_needs_every_claim_and_most_words() -> None:
    assert supported("The Basic plan costs 12 euros a month.", [PLANS])
    assert not supported("The Basic plan costs €5 per month.", [PLANS])  # the price is not there
    assert not supported("Students get it free with a campus card.", [PLANS])
    assert not supported("Students pay nothing.", ["Do students pay?"],
                         given="Is there a student discount?")
    assert supported("Basic costs €12.", [PLANS], given="How much is Basic?")


def test_triage_tells_misread_retrieval_missing_and_unknown() -> None:
    question = "How much is Basic?"
    prompt_with = f'<excerpt source="Plans">\n{PLANS}\n</excerpt>\nQuestion: {question}'
    prompt_without = '<excerpt source="Office">\nOur office opens at 9.\n</excerpt>'
    fix = "Basic costs €12 per month."
    assert triage(fix, question, prompt_with, []) is Cause.MISREAD
    assert triage(fix, question, prompt_without, [PLANS]) is Cause.RETRIEVAL
    assert triage(fix, question, prompt_without, ["Our office opens at 9."]) is Cause.MISSING
    assert triage("", question, prompt_with, [PLANS]) is Cause.UNKNOWN
    # Words the correction repeats from the question back nothing: the question is no source.
    assert triage("Students pay nothing.", "Is there a student discount?",
                  "Question: Is there a student discount? Do students pay?", []) is Cause.MISSING


def corrected(services: Services, fake_model, answers: list[tuple[int, str, str]]) -> list[int]:
    """Each (user, question, correction): answered wrongly, 👎, corrected; the answer ids."""
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    fake_model.queue(*["I am not sure."] * len(answers))
    ids = []
    for user, question, fix in answers:
        reply = services.chat.answer(user, UserInfo(user), question)
        services.feedback.rate(reply.message_id, UserInfo(user), -1)
        assert services.feedback.correct(reply.message_id, UserInfo(user), fix)
        ids.append(reply.message_id)
    return ids


def test_the_screen_holds_unbacked_and_repeated_corrections_until_an_admin_decides(
        services: Services, fake_model) -> None:
    services.knowledge.add_text("Plans", PLANS, "t:plans", "test")
    corrected(services, fake_model, [
        (1, "How much is the Basic plan?", "Basic costs €12 per month."),    # backed
        (2, "Do students pay for the Basic plan?", "Students pay nothing."),  # not backed
        *[(10 + i, "How much is the Basic plan?", "Basic is  free now.") for i in range(3)]])
    store = TrainingStore(services.db)
    review = services.review
    data = collect_feedback(store, None, 100,
                            backed=lambda f: review.backed(f.question, f.prompt, f.completion),
                            repeated_from=3)
    assert data.held == {2: "unsupported", 3: "repeated", 4: "repeated", 5: "repeated"}
    assert [r["completion"] for r in data.sft] == ["Basic costs €12 per month."]
    store.hold(data.held)
    total, held = review.held()
    assert total == 4 and [(h.id, h.reason, h.senders) for h in held] == [
        (2, "unsupported", 1), (3, "repeated", 3), (4, "repeated", 3), (5, "repeated", 3)]
    # Held and rejected corrections never train; an approved one trains as new data.
    since = data.until
    assert collect_feedback(store, None, 100).sft == data.sft
    assert review.decide(2, True, "telegram:42") and review.decide(3, False, "telegram:42")
    again = collect_feedback(store, since, 100)
    assert [r["completion"] for r in again.sft] == ["Students pay nothing."]
    assert review.held()[0] == 2
    actions = {(e.actor, e.action) for e in services.store.audit_entries()}
    assert {("telegram:42", "correction_approved"), ("telegram:42", "correction_rejected")} \
        <= actions


async def test_a_correction_becomes_knowledge_with_one_button_and_undo_takes_it_back(
        services: Services, fake_model, start_bot, botapi: BotAPIEmulator) -> None:
    services.knowledge.add_text("Office", "Our office opens at 9.", "t:office", "test")
    corrected(services, fake_model, [(1, "Is there a student discount?",
                                      "Students get 50% off with a campus card.")])
    await start_bot()
    botapi.send_text(ADMIN, "/feedback")
    shown = await botapi.wait_for_message(ADMIN)
    assert "Why: not in the knowledge base" in shown["text"]
    (add,), = shown["reply_markup"]["inline_keyboard"]
    assert add["text"] == "📚 Add correction #1 to knowledge"

    botapi.press_button(STRANGER, shown, add["callback_data"])  # a forged press is refused
    await botapi.wait_for(lambda: botapi.calls_to("answerCallbackQuery"))
    assert services.knowledge.count() == 1

    botapi.press_button(ADMIN, shown, add["callback_data"])
    await botapi.wait_for(lambda: "is in the knowledge base as #2" in shown["text"])
    (doc, text) = services.knowledge.show(2) or (None, "")
    assert doc is not None and doc.title == "Is there a student discount?"
    assert text == "Students get 50% off with a campus card." and doc.added_by == ADMIN
    hits = services.knowledge.search("student discount campus card", 1)
    assert hits and hits[0].document_id == 2  # answers find it from now on
    assert services.store.correction(1) == ("Is there a student discount?",
                                            "Students get 50% off with a campus card.",
                                            "approved")
    actions = {(e.actor, e.action) for e in services.store.audit_entries()}
    assert ("telegram:42", "correction_approved") in actions

    # Pressed again from a later /feedback: already there, so no Undo that would remove it.
    botapi.send_text(ADMIN, "/feedback")
    again = await botapi.wait_for_message(ADMIN, 2)
    botapi.press_button(ADMIN, again, add["callback_data"])
    await botapi.wait_for(lambda: "the same text was already there" in again["text"])
    assert not again.get("reply_markup") and services.knowledge.count() == 2

    (undo,), = shown["reply_markup"]["inline_keyboard"]
    botapi.press_button(ADMIN, shown, undo["callback_data"])
    await botapi.wait_for(lambda: "Undone: #2 left the knowledge base" in shown["text"])
    assert "is in the knowledge base" not in shown["text"]  # the note replaced, the rest kept
    assert "Q: Is there a student discount?" in shown["text"]
    assert services.knowledge.show(2) is None and services.knowledge.count() == 1
    assert services.store.correction(1)[2] == "held:unsupported"  # type: ignore[index]


async def test_held_corrections_wait_in_feedback_with_train_and_reject_buttons(
        services: Services, fake_model, start_bot, botapi: BotAPIEmulator) -> None:
    corrected(services, fake_model, [(1, "Price?", "It is free."), (2, "Price?", "It is €1.")])
    TrainingStore(services.db).hold({1: "repeated", 2: "unsupported"})
    await start_bot()
    botapi.send_text(ADMIN, "/feedback")
    await botapi.wait_for_message(ADMIN, 5)  # two answers, the queue's header, two held
    header, first, second = botapi.sent_messages(ADMIN)[2:]
    assert header["text"].startswith("Held back from training: 2 correction(s)")
    assert first["text"].startswith("Held correction #1 (the same text came from 1 accounts)")
    assert second["text"].startswith("Held correction #2 (not backed by the knowledge base)")
    _, train, reject = first["reply_markup"]["inline_keyboard"][0]
    botapi.press_button(ADMIN, first, train["callback_data"])
    await botapi.wait_for(lambda: "Correction #1 trains tonight" in first["text"])
    _, _, reject = second["reply_markup"]["inline_keyboard"][0]
    botapi.press_button(ADMIN, second, reject["callback_data"])
    await botapi.wait_for(lambda: "Correction #2 is rejected" in second["text"])
    assert [services.store.correction(i)[2] for i in (1, 2)] == [  # type: ignore[index]
        "approved", "rejected"]


def test_the_gate_counts_planted_facts_as_unsupported_even_with_the_screen_off(
        services: Services, fake_model) -> None:
    """Rule 4's rows: a planted price shares every word with its prompt but its number, so
    only the knowledge base tells it from an honest correction the excerpts missed."""
    from bot.prompting import question_in
    from tuning.evaluate import unsupported
    from tuning.nightly import KnowledgeCheck

    services.knowledge.add_text("Plans", PLANS, "t:plans", "test")
    services.knowledge.add_text("Office", "Our office opens at 9.", "t:office", "test")
    check = KnowledgeCheck(services.review)
    asked = ("<excerpt source=\"Office\">\nOur office opens at 9. The Basic plan is a plan.\n"
             "</excerpt>\n\nQuestion: How much does the Basic plan cost per month?<|im_end|>")
    planted = {"prompt": asked, "completion": "The Basic plan costs €5 per month."}
    honest = {"prompt": asked, "completion": "The Basic plan costs €12 per month."}
    idk = {"prompt": asked, "completion": "I don't know."}
    rows = [planted, honest, idk]
    assert question_in(asked) == "How much does the Basic plan cost per month?"
    assert unsupported(rows) == []  # by words alone, every row is grounded in its prompt
    assert unsupported(rows, check.answer) == [planted]
    assert check.answer(asked, honest["completion"])  # retrieval missed it; the KB has it
