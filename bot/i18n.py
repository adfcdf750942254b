"""The bot's own texts in English and Korean, chosen by the user's Telegram `language_code`.

Answers come from the model; these are the texts around them: help, confirmations, errors.
"""

from __future__ import annotations

DEFAULT = "en"

TEXTS: dict[str, dict[str, str]] = {
    "help": {
        "en": "Hi! I answer questions from a curated knowledge base and cite my sources.\n\n"
              "• Just send me a question (in groups, mention me or reply to me).\n"
              "• Rate each answer with 👍 or 👎 — every night I retrain on those ratings.\n"
              "• /reset starts a new conversation.\n"
              "• /forget deletes everything you wrote here and keeps you out of training.\n"
              "• /help shows this message.\n\n"
              "What I store: your Telegram id, name and language, your messages, my answers, "
              "your ratings and corrections. Ratings and corrections train tomorrow's version of "
              "me; nothing leaves this server.",
        "ko": "안녕하세요! 저는 관리되는 지식 베이스를 바탕으로 질문에 답하고 출처를 알려 드립니다.\n\n"
              "• 질문을 보내 주세요 (그룹에서는 저를 멘션하거나 제 메시지에 답장해 주세요).\n"
              "• 답변마다 👍 또는 👎 로 평가해 주세요 — 매일 밤 그 평가로 다시 학습합니다.\n"
              "• /reset 새 대화를 시작합니다.\n"
              "• /forget 여기서 쓰신 모든 내용을 지우고 학습에서 제외합니다.\n"
              "• /help 이 안내를 보여 줍니다.\n\n"
              "저장하는 정보: 텔레그램 ID, 이름과 언어, 보내신 메시지, 제 답변, 평가와 수정 의견. "
              "평가와 수정 의견은 다음 버전의 학습에 쓰이며, 이 서버 밖으로 나가지 않습니다.",
    },
    "reset": {"en": "Started a new conversation. Earlier messages won't be used as context.",
              "ko": "새 대화를 시작했습니다. 이전 메시지는 더 이상 참고하지 않습니다."},
    "sources": {"en": "Sources", "ko": "출처"},
    "rated": {"en": "Thanks for the feedback!", "ko": "평가해 주셔서 감사합니다!"},
    "rating_changed": {"en": "Updated your rating.", "ko": "평가를 변경했습니다."},
    "rating_same": {"en": "You already rated this answer that way.",
                    "ko": "이미 같은 평가를 하셨습니다."},
    "rating_gone": {"en": "Sorry, I no longer have that answer.",
                    "ko": "죄송합니다. 그 답변은 더 이상 남아 있지 않습니다."},
    "button_invalid": {"en": "This button is no longer valid.",
                       "ko": "이 버튼은 더 이상 사용할 수 없습니다."},
    "correction_prompt": {
        "en": "Sorry that answer missed. If you like, reply to this message with a better answer "
              "or what was wrong, and I'll learn from it. (answer #{id})",
        "ko": "답변이 부족해서 죄송합니다. 원하시면 이 메시지에 답장으로 더 나은 답변이나 "
              "무엇이 틀렸는지 알려 주세요. 학습에 반영하겠습니다. (답변 #{id})"},
    "correction_placeholder": {"en": "A better answer, or what was wrong",
                               "ko": "더 나은 답변 또는 틀린 점"},
    "correction_saved": {"en": "Thank you! I saved your correction; the next training run learns "
                               "from it.",
                         "ko": "감사합니다! 수정 의견을 저장했습니다. 다음 학습에 반영됩니다."},
    "forget_question": {
        "en": "Delete everything you wrote here — your messages, my answers to them, your ratings "
              "and corrections — and never use you for training again?",
        "ko": "여기서 쓰신 모든 내용(메시지, 그에 대한 제 답변, 평가와 수정 의견)을 지우고 "
              "앞으로 학습에 사용하지 않을까요?"},
    "forget_yes": {"en": "Yes, forget me", "ko": "네, 지워 주세요"},
    "cancel": {"en": "Cancel", "ko": "취소"},
    "forget_cancelled": {"en": "Cancelled; nothing was deleted.",
                         "ko": "취소했습니다. 아무것도 지우지 않았습니다."},
    "forget_done": {
        "en": "Done. I deleted {messages} messages, {ratings} ratings and {corrections} "
              "corrections, and you will never be part of training data.",
        "ko": "완료했습니다. 메시지 {messages}개, 평가 {ratings}개, 수정 의견 {corrections}개를 "
              "지웠으며, 앞으로 학습 데이터에 포함되지 않습니다."},
    "not_allowed": {"en": "Sorry, this assistant is private. Ask its owner to add you.",
                    "ko": "죄송합니다. 이 도우미는 비공개입니다. 관리자에게 추가를 요청해 주세요."},
    "too_fast": {"en": "You're sending messages too fast; please wait {seconds} s and ask again.",
                 "ko": "메시지를 너무 빨리 보내고 계십니다. {seconds}초 후에 다시 질문해 주세요."},
    "apology": {"en": "Sorry, something went wrong on my side while answering. Please try again "
                      "in a moment.",
                "ko": "죄송합니다. 답변하는 중에 문제가 생겼습니다. 잠시 후 다시 시도해 주세요."},
    "late_answer": {"en": "(Sorry for the delay: I was restarting when you asked.)",
                    "ko": "(늦어서 죄송합니다. 질문하셨을 때 재시작하는 중이었습니다.)"},
    "restart_apology": {"en": "Sorry, I restarted before I could answer this, and it has been "
                              "a while. Please send your question again if you still need it.",
                        "ko": "죄송합니다. 답변하기 전에 재시작되었고 시간이 꽤 지났습니다. "
                              "아직 필요하시면 질문을 다시 보내 주세요."},
    "empty_question": {"en": "Please send a question as text.",
                       "ko": "질문을 텍스트로 보내 주세요."},
    "too_long": {"en": "That message is too long ({length} characters); please keep it under "
                       "{limit}.",
                 "ko": "메시지가 너무 깁니다 ({length}자). {limit}자 이내로 보내 주세요."},
    "busy_user": {"en": "I'm still working on your previous question; please wait for that "
                        "answer first.",
                  "ko": "이전 질문에 아직 답하는 중입니다. 그 답변을 먼저 기다려 주세요."},
    "busy_all": {"en": "I'm answering a lot of people right now; please try again in a minute.",
                 "ko": "지금 많은 분들께 답하는 중입니다. 잠시 후 다시 시도해 주세요."},
    "no_knowledge": {
        "en": "I have nothing in my knowledge base about that, so I'd rather not guess. Try "
              "rephrasing, or ask an admin to add a document that covers it.",
        "ko": "제 지식 베이스에는 그에 대한 내용이 없어서 추측하지 않겠습니다. 다르게 질문해 "
              "보시거나, 관리자에게 관련 문서를 추가해 달라고 요청해 주세요."},
    "dont_know": {
        "en": "I don't know: the knowledge base does not answer that. If it should, an admin "
              "can add a document that covers it.",
        "ko": "모르겠습니다. 지식 베이스에 그 답이 없습니다. 필요하다면 관리자가 그 내용을 담은 "
              "문서를 추가할 수 있습니다."},
    "leak": {"en": "Sorry, I can't share my instructions. Ask me about the knowledge base instead.",
             "ko": "죄송합니다. 제 지침은 공유할 수 없습니다. 지식 베이스에 관해 질문해 주세요."},
}


def lang_for(language_code: str | None) -> str:
    """'ko' for Korean users, English for everyone else."""
    return "ko" if (language_code or "").lower().startswith("ko") else DEFAULT


def t(key: str, language_code: str | None = None, **params: object) -> str:
    """The text `key` in the user's language, with `params` filled in."""
    texts = TEXTS[key]
    return texts.get(lang_for(language_code), texts[DEFAULT]).format(**params)
