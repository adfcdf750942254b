"""Telegram handlers: read the update, call one service, render the reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re

from telegram import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
    User,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ApplicationHandlerStop, CallbackContext, ExtBot

from bot.i18n import t
from bot.resilience import recovery_of, reply_journal
from bot.services import UserError
from bot.services.feedback import THUMBS_DOWN, THUMBS_UP
from bot.services.queue import FairQueue, RateLimiter
from bot.storage.store import RatingOutcome, UserInfo
from bot.streaming import StreamingReply
from bot.wiring import Services

logger = logging.getLogger(__name__)

RATE_PREFIX = "r"

ADMIN_HELP = (
    "\n\nAs an admin you can curate the knowledge base:\n"
    "• send me a file (.txt, .md, .html, .pdf) to add it; the same file name again replaces it\n"
    "• /kb_add <title>, then the text on the next lines (or reply to a message)\n"
    "• /kb_list [page], /kb_show <id>, /kb_search <query>, /kb_remove <id>\n"
    "• /stats: usage and 👍 rate per adapter version, with a chart\n"
    "• /feedback [n]: the latest 👎 answers, to fix the knowledge base"
)


class AssistantContext(CallbackContext[ExtBot, dict, dict, dict]):
    """Typed access to the services built at start-up."""

    @property
    def services(self) -> Services:
        return self.application.bot_data["services"]

    @property
    def queue(self) -> FairQueue:
        return self.application.bot_data["queue"]

    @property
    def rate_limiter(self) -> RateLimiter:
        return self.application.bot_data["rate_limiter"]

    def may_use(self, user: User | None) -> bool:
        """ALLOWED_USER_IDS (when set) and admins may use the bot."""
        settings = self.services.settings
        return user is not None and (not settings.allowed_user_ids
                                     or user.id in settings.allowed_user_ids
                                     or user.id in settings.admin_ids)


async def allowlist(update: Update, context: AssistantContext) -> None:
    """Group -1: stop every update from someone ALLOWED_USER_IDS leaves out, on every path
    (questions, commands, buttons), with one refusal where they addressed the bot."""
    user = update.effective_user
    if context.may_use(user):
        return
    lang = user.language_code if user else None
    if update.callback_query is not None:
        await update.callback_query.answer(t("not_allowed", lang), show_alert=True)
    elif update.effective_message is not None and update.effective_chat is not None and (
            update.effective_chat.type == ChatType.PRIVATE
            or _addressed_to_bot(update, context) is not None
            or (update.effective_message.text or "").startswith("/")):
        await update.effective_message.reply_text(t("not_allowed", lang))
    raise ApplicationHandlerStop


def rating_keyboard(message_id: int) -> InlineKeyboardMarkup:
    """👍/👎 buttons; callback data is `r:<message id>:<±1>`, far below Telegram's 64 bytes."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton("👍", callback_data=f"{RATE_PREFIX}:{message_id}:{THUMBS_UP}"),
        InlineKeyboardButton("👎", callback_data=f"{RATE_PREFIX}:{message_id}:{THUMBS_DOWN}"),
    ]])


def parse_rating(data: str | None) -> tuple[int, int] | None:
    """(message id, value) from callback data, or None if it is not a well-formed rating."""
    parts = (data or "").split(":")
    if len(parts) != 3 or parts[0] != RATE_PREFIX:
        return None
    try:
        message_id, value = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    return (message_id, value) if value in (THUMBS_UP, THUMBS_DOWN) else None


def _lang(update: Update) -> str | None:
    user = update.effective_user
    return user.language_code if user else None


def user_info(user: User) -> UserInfo:
    return UserInfo(id=user.id, username=user.username, first_name=user.first_name,
                    language_code=user.language_code)


async def start(update: Update, context: AssistantContext) -> None:
    """/start and /help: say what the bot does and what it stores."""
    if update.effective_message:
        user = update.effective_user
        admin = user is not None and user.id in context.services.settings.admin_ids
        lang = user.language_code if user else None
        await update.effective_message.reply_text(t("help", lang) + (ADMIN_HELP if admin else ""))


async def reset(update: Update, context: AssistantContext) -> None:
    """/reset: start a new conversation in this chat."""
    chat, message = update.effective_chat, update.effective_message
    if chat is None or message is None:
        return
    await asyncio.to_thread(context.services.chat.reset, chat.id)
    await message.reply_text(t("reset", _lang(update)))


def _addressed_to_bot(update: Update, context: AssistantContext) -> str | None:
    """The question text if the bot should answer this message, else None (group etiquette)."""
    message = update.effective_message
    if message is None or not message.text:
        return None
    if message.chat.type == ChatType.PRIVATE:
        return message.text
    mention = re.compile(rf"@{re.escape(context.bot.username)}\b", re.IGNORECASE)
    if mention.search(message.text):
        return mention.sub("", message.text).strip()
    reply_to = message.reply_to_message
    if reply_to and reply_to.from_user and reply_to.from_user.id == context.bot.id:
        return message.text
    return None


async def answer(update: Update, context: AssistantContext) -> None:
    """A question: retrieve, generate (streamed into the chat), then sources and 👍/👎 buttons.

    After a crash (`recovery_of`), a question the last process left unanswered is answered
    with a note that it is late, into the message it had started streaming, if any; one older
    than LATE_ANSWER_MINUTES gets an apology instead; one already answered is left alone."""
    text = _addressed_to_bot(update, context)
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if text is None or message is None or chat is None or user is None:
        return
    lang = user.language_code
    if await _take_correction(update, context):
        return
    recovery = recovery_of(context.application, update)
    if recovery is not None and recovery.too_old(context.services.settings.late_answer_minutes):
        await message.reply_text(t("restart_apology", lang), do_quote=True)
        return
    wait = context.rate_limiter.retry_after(user.id) if recovery is None else 0
    if wait:
        await message.reply_text(t("too_fast", lang, seconds=math.ceil(wait)))
        return
    is_group = chat.type != ChatType.PRIVATE
    stream = StreamingReply(context.bot, chat.id, message.message_id if is_group else None,
                            is_group, on_sent=reply_journal(context.application, update),
                            resume=recovery.reply_message_id if recovery else None)
    try:
        reply = await context.queue.run(user.id, context.services.chat.answer, chat.id,
                                        user_info(user), text, on_text=stream.feed,
                                        asked_as=message.message_id)
    except UserError as exc:
        await stream.fail(exc.localized(lang))
        return
    except Exception:
        logger.exception("Answering a message in chat %s failed", chat.id)
        await stream.fail(t("apology", lang))
        return
    if reply.shown_as is not None:  # answered before the crash, and the chat has it
        await stream.drop()
        return
    shown = reply.render(lang)
    if recovery is not None:
        shown = f"{t('late_answer', lang)}\n\n{shown}"
    sent = await stream.finish(shown, rating_keyboard(reply.message_id))
    await asyncio.to_thread(context.services.chat.shown_as, reply.message_id, sent.message_id)


async def rate(update: Update, context: AssistantContext) -> None:
    """A 👍/👎 press: store the rating and acknowledge it."""
    query = update.callback_query
    if query is None:
        return
    lang = query.from_user.language_code
    parsed = parse_rating(query.data)
    if parsed is None:
        await query.answer(t("button_invalid", lang))
        return
    message_id, value = parsed
    chat_id = query.message.chat.id if query.message is not None else None
    if chat_id is None:  # a button on a message too old to be sent back: no chat to check
        await query.answer(t("button_invalid", lang))
        return
    outcome = await asyncio.to_thread(context.services.feedback.rate, message_id,
                                      user_info(query.from_user), value, chat_id)
    await _acknowledge(query, t({
        RatingOutcome.CREATED: "rated",
        RatingOutcome.CHANGED: "rating_changed",
        RatingOutcome.UNCHANGED: "rating_same",
        RatingOutcome.NO_MESSAGE: "rating_gone",
    }[outcome], lang))
    if value == THUMBS_DOWN and outcome in (RatingOutcome.CREATED, RatingOutcome.CHANGED):
        await _offer_correction(update, context, message_id)


async def _offer_correction(update: Update, context: AssistantContext, message_id: int) -> None:
    """After a 👎: invite (never require) a better answer or a reason, as a reply."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None:
        return
    # A reply may arrive before the prompt is recorded: `_take_correction` waits for this.
    offers: dict[tuple[int, int], asyncio.Event] = context.bot_data.setdefault(
        "correction_offers", {})
    recorded = offers[(chat.id, user.id)] = asyncio.Event()
    try:
        lang = _lang(update)
        prompt = await context.bot.send_message(
            chat.id, t("correction_prompt", lang, id=message_id),
            reply_markup=ForceReply(selective=True,
                                    input_field_placeholder=t("correction_placeholder", lang)))
        await asyncio.to_thread(context.services.feedback.invited_correction, message_id,
                                user.id, prompt.message_id)
    except TelegramError as exc:
        logger.warning("Could not offer a correction: %s", exc)
    finally:
        recorded.set()
        if offers.get((chat.id, user.id)) is recorded:
            del offers[(chat.id, user.id)]


async def _take_correction(update: Update, context: AssistantContext) -> bool:
    """If this message replies to a correction prompt, store it; True if it was one."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return False
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != context.bot.id:
        return False
    offer = context.bot_data.get("correction_offers", {}).get((message.chat.id, user.id))
    if offer is not None:  # the prompt was sent and is being recorded: wait for it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(offer.wait(), 10)
    target = await asyncio.to_thread(context.services.feedback.correction_target,
                                     message.chat.id, replied.message_id, user.id)
    if target is None:  # not a correction prompt, or one meant for someone else
        return False
    stored = await asyncio.to_thread(context.services.feedback.correct, target,
                                     user_info(user), message.text or "")
    if stored:
        await message.reply_text(t("correction_saved", _lang(update)))
    return stored


async def forget(update: Update, context: AssistantContext) -> None:
    """/forget: after a confirmation, delete the user's data and exclude them from training."""
    lang = _lang(update)
    keyboard = InlineKeyboardMarkup([[
        InlineKeyboardButton(t("forget_yes", lang), callback_data="forget:yes"),
        InlineKeyboardButton(t("cancel", lang), callback_data="forget:no"),
    ]])
    await update.effective_message.reply_text(t("forget_question", lang), reply_markup=keyboard)


async def forget_confirm(update: Update, context: AssistantContext) -> None:
    """The /forget buttons; they always act on the user who presses them."""
    query = update.callback_query
    if query is None:
        return
    lang = query.from_user.language_code
    if query.data != "forget:yes":
        await _acknowledge(query)
        await query.edit_message_text(t("forget_cancelled", lang))
        return
    # Forget first: a press handled again after a crash is too old to be acknowledged.
    counts = await asyncio.to_thread(context.services.feedback.forget, query.from_user.id)
    await _acknowledge(query)
    await query.edit_message_text(t("forget_done", lang, **counts))


async def _acknowledge(query: CallbackQuery, text: str | None = None) -> None:
    """Answer a button press; one from before a restart is too old to answer, which is fine."""
    try:
        await query.answer(text)
    except BadRequest as exc:
        logger.info("Could not answer callback query %s: %s", query.id, exc)


async def on_error(update: object, context: AssistantContext) -> None:
    """Log errors PTB caught outside our handlers' own try blocks."""
    logger.error("Unhandled error while processing an update", exc_info=context.error)


def register(application: Application) -> None:
    from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler, filters

    application.add_handler(CommandHandler(["start", "help"], start))
    application.add_handler(CommandHandler("reset", reset))
    application.add_handler(CommandHandler("forget", forget))
    application.add_handler(CallbackQueryHandler(forget_confirm, pattern=r"^forget:"))
    application.add_handler(CallbackQueryHandler(rate))  # also answers stale or unknown buttons
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, answer))
    application.add_error_handler(on_error)
