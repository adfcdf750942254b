from dataclasses import replace

from bot.storage.store import UserInfo
from bot.storage.training import TrainingStore
from bot.wiring import Services
from tuning.dataset import collect_feedback, split_rows


def answered(services: Services, user: int, question: str) -> int:
    return services.chat.answer(user, UserInfo(user), question).message_id


def setup(services: Services, fake_model) -> dict[str, int]:
    services.knowledge.add_text("Notes", "General notes.", "t:notes", "test")
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    fake_model.queue("good answer", "bad answer", "other answer")
    ids = {"good": answered(services, 1, "q1"), "bad": answered(services, 1, "q2"),
           "other": answered(services, 2, "q3")}
    services.feedback.rate(ids["good"], UserInfo(1), 1)
    services.feedback.rate(ids["bad"], UserInfo(1), -1)
    services.feedback.correct(ids["bad"], UserInfo(1), "the corrected answer")
    services.feedback.rate(ids["other"], UserInfo(2), 1)
    return ids


def test_ratings_and_corrections_become_sft_and_kto_rows(services: Services, fake_model) -> None:
    setup(services, fake_model)
    data = collect_feedback(TrainingStore(services.db), since=None, max_rows_per_user=100)
    assert sorted(r["completion"] for r in data.sft) == [
        "good answer", "other answer", "the corrected answer"]
    assert sorted((r["completion"], r["label"]) for r in data.kto) == [
        ("bad answer", False), ("good answer", True), ("other answer", True),
        ("the corrected answer", True)]
    # The prompt is what the model saw, retrieved context included.
    assert all("<excerpt source=\"Notes\">" in r["prompt"] for r in data.sft + data.kto)
    assert data.until is not None and len(data.digest()) == 16


def test_forgotten_users_never_become_training_data(services: Services, fake_model) -> None:
    setup(services, fake_model)
    services.feedback.forget(1)
    data = collect_feedback(TrainingStore(services.db), since=None, max_rows_per_user=100)
    assert [r["completion"] for r in data.sft] == ["other answer"]
    assert [r["completion"] for r in data.kto] == ["other answer"]


def test_per_user_cap_since_filter_and_dedupe(services: Services, fake_model) -> None:
    setup(services, fake_model)
    store = TrainingStore(services.db)
    capped = collect_feedback(store, since=None, max_rows_per_user=2)
    assert capped.size == 2 + 2  # user 1 capped at 2 rows, user 2 has 2 (sft + kto)
    everything = collect_feedback(store, since=None, max_rows_per_user=100)
    assert everything.size == 5 + 2
    assert collect_feedback(store, since=everything.until, max_rows_per_user=100).size == 0


def test_split_keeps_a_prompt_in_one_split() -> None:
    rows = [{"prompt": f"p{i // 2}", "completion": f"c{i}"} for i in range(40)]
    train, val, test = split_rows(rows, 0.15, 0.15, seed=1)
    assert len(train) + len(val) + len(test) == 40 and val and test
    prompts = [{r["prompt"] for r in part} for part in (train, val, test)]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])


def test_dialogs_synthesised_from_the_knowledge_base() -> None:
    from tuning.dialog import IDK_ANSWER, handwritten, synthesise, to_rows

    docs = [("Returns", "# Returns\n\nUnused items can be returned within thirty days of purchase."
                        "\n\n# Refunds\n\nRefunds are paid to the original card within a week."),
            ("Parking", "# Parking\n\nVisitors park for free in the garage on level B2 all day.")]
    dialogs = synthesise(docs, seed=0)
    grounded = [d for d in dialogs if d.id.startswith("kb")]
    assert {d.turns[0][1] for d in grounded} >= {
        "Unused items can be returned within thirty days of purchase. (Source: Returns)",
        "Visitors park for free in the garage on level B2 all day. (Source: Parking)"}
    unanswerable = [d for d in dialogs if d.id.startswith("idk")]
    assert unanswerable and all(d.turns[0][1] == IDK_ANSWER for d in unanswerable)
    assert any(len(d.turns) == 2 for d in dialogs)  # follow-ups in one conversation
    rows = to_rows(next(d for d in dialogs if len(d.turns) == 2), "SYS",
                   lambda m: "|".join(f"{x['role']}:{x['content']}" for x in m))
    assert len(rows) == 2 and rows[1]["prompt"].count("user:") == 2  # history in the prompt
    assert "<excerpt source=" in rows[0]["prompt"] and rows[0]["dialog"] == rows[1]["dialog"]
    assert len(handwritten()) == 10


def test_answers_are_linked_to_their_questions_when_group_answers_finish_out_of_order(
        services: Services) -> None:
    """In a group, A asks, B asks, B's answer finishes first: /forget A removes A's answer."""
    from sqlalchemy import select

    from bot.storage.models import Message

    store = services.store
    for uid in (1, 2):
        store.upsert_user(UserInfo(uid))
    conv = store.active_conversation(-100)
    qa = store.add_message(conv, "user", "question from A", user_id=1)
    qb = store.add_message(conv, "user", "question from B", user_id=2)
    store.add_message(conv, "assistant", "answer to B", prompt="p-b", question_id=qb)
    store.add_message(conv, "assistant", "answer to A", prompt="p-a", question_id=qa)
    store.forget_user(1)
    with services.db.read() as s:
        left = s.scalars(select(Message.text).order_by(Message.id)).all()
    assert left == ["question from B", "answer to B"]


def test_a_forgotten_users_group_messages_never_reach_training(services: Services,
                                                               fake_model) -> None:
    """Their words sit in other people's prompts as history; after /forget no row has them."""
    canary = "my locker code is CANARY-4471"
    services.knowledge.add_text("Notes", "These are the general notes of the team.", "t:n", "t")
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    fake_model.queue("noted", "an answer for B")
    services.chat.answer(-100, UserInfo(1), canary)
    reply = services.chat.answer(-100, UserInfo(2), "what is new?")
    assert canary in fake_model.calls[-1][1]["content"]  # A's message was B's history
    services.feedback.rate(reply.message_id, UserInfo(2), 1)
    before = collect_feedback(TrainingStore(services.db), since=None, max_rows_per_user=100)
    assert any(canary in r["prompt"] for r in before.sft)  # the test can see the leak
    services.feedback.forget(1)
    after = collect_feedback(TrainingStore(services.db), since=None, max_rows_per_user=100)
    assert not any(canary in r["prompt"] or canary in r["completion"]
                   for r in after.sft + after.kto)


def test_a_held_out_prompt_stays_held_out_as_the_data_grows() -> None:
    """What `tune eval` measures on tomorrow was never trained on tonight."""
    tonight = [{"prompt": f"p{i}", "completion": "c"} for i in range(60)]
    later = tonight + [{"prompt": f"q{i}", "completion": "c"} for i in range(200)]
    train_tonight, _, _ = split_rows(tonight, 0.15, 0.15, seed=3)
    _, val_later, test_later = split_rows(later, 0.15, 0.15, seed=3)
    trained = {r["prompt"] for r in train_tonight}
    assert trained and not trained & {r["prompt"] for r in val_later + test_later}


def test_training_prompts_keep_only_the_excerpts_backing_the_answer() -> None:
    from types import SimpleNamespace

    from bot.prompting import build_messages, excerpt, excerpts_in
    from tuning.dataset import evidence_only

    evidence = [SimpleNamespace(title="Opening hours", text="The shop opens at nine on weekdays."),
                SimpleNamespace(title="Refunds", text="Refunds take 14 days, paid to the card."),
                SimpleNamespace(title="Parking", text="Parking is free behind the building.")]
    prompt = "\n".join(m["content"] for m in build_messages("Be brief.", [], "How long?",
                                                            evidence))
    rows = [{"prompt": prompt, "completion": "Refunds take 14 days (Source: Refunds)."},
            {"prompt": prompt, "completion": "It takes 14 days."},  # a fact, no source
            {"prompt": prompt, "completion": "I don't know, sorry."},
            {"prompt": prompt, "completion": "Ask the manager on duty."}]  # nothing backs it
    cited, fact, idk, unbacked = evidence_only(rows)
    assert excerpts_in(cited["prompt"]) == ["Refunds take 14 days, paid to the card."]
    others = "\n" + excerpt(evidence[0]), "\n" + excerpt(evidence[2])
    assert cited["prompt"] == prompt.replace(others[0], "").replace(others[1], "")
    assert cited["prompt"].endswith("Question: How long?")
    assert fact["prompt"] == cited["prompt"]
    assert idk["prompt"] == prompt and unbacked["prompt"] == prompt
    assert [r["completion"] for r in (cited, fact, idk, unbacked)] == \
        [r["completion"] for r in rows]
