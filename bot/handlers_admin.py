"""Knowledge-base curation from Telegram, for the users in ADMIN_IDS only (checked on every path)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.handlers import AssistantContext
from bot.services import UserError
from bot.services.knowledge import AddResult
from bot.services.stats import rating_chart
from knowledge.documents import SUPPORTED_SUFFIXES

logger = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit
PAGE_SIZE = 10
REFUSAL = "Sorry, only knowledge-base admins can do that."
REVIEW_NOTES = ("📚 Correction", "↩️ Undone", "✅ Correction", "🚫 Correction",
                "There is no correction")  # how review_button's notes start
KB_ADD_USAGE = ("Usage: /kb_add <title> on the first line and the text on the next lines, "
                "or reply /kb_add <title> to a message whose text should be added.")


def _is_admin(update: Update, context: AssistantContext) -> bool:
    user = update.effective_user
    return user is not None and user.id in context.services.settings.admin_ids


async def upload_refused(update: Update, context: AssistantContext) -> None:
    """A file from someone who is not an admin."""
    await update.effective_message.reply_text(
        "I can only answer text messages; only knowledge-base admins can add documents.")


async def refuse(update: Update, context: AssistantContext) -> None:
    """An admin command from someone who is not an admin."""
    await _refuse(update)


async def _refuse(update: Update) -> None:
    if update.callback_query:
        await update.callback_query.answer(REFUSAL, show_alert=True)
    elif update.effective_message:
        await update.effective_message.reply_text(REFUSAL)


def _actor(update: Update) -> str:
    return f"telegram:{update.effective_user.id}"


def _describe(result: AddResult) -> str:
    d = result.document
    if result.status.value == "duplicate":
        return f"Already in the knowledge base as #{d.id} “{d.title}”; nothing changed."
    verb = "Added" if result.status.value == "added" else f"Replaced (now version {d.version})"
    return f"{verb}: #{d.id} “{d.title}” — {d.size:,} characters, {d.chunk_count} chunks."


def _args_text(update: Update) -> str:
    """Everything after the command, first line and following lines."""
    text = update.effective_message.text or ""
    return text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else ""


async def upload(update: Update, context: AssistantContext) -> None:
    """An admin sends a file in a private chat: ingest it and report title, size and chunks."""
    message = update.effective_message
    doc = message.document
    name = doc.file_name or "document"
    if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
        await message.reply_text(f"I can't read '{name}'. Supported types: "
                                 f"{', '.join(SUPPORTED_SUFFIXES)}.")
        return
    if doc.file_size and doc.file_size > MAX_DOWNLOAD_BYTES:
        await message.reply_text(f"'{name}' is {doc.file_size / 2**20:.1f} MB; bots can only "
                                 "download files up to 20 MB. Split it, or add it with "
                                 "`assistant kb add` on the server.")
        return
    try:
        data = bytes(await (await context.bot.get_file(doc.file_id)).download_as_bytearray())
        result = await asyncio.to_thread(context.services.knowledge.add_file, Path(name),
                                         _actor(update), update.effective_user.id, data,
                                         f"telegram:{name}")
    except UserError as exc:
        await message.reply_text(str(exc))
        return
    except Exception:
        logger.exception("Ingesting an uploaded document failed")
        await message.reply_text(f"Sorry, adding '{name}' failed on my side. Please try again; "
                                 "if it keeps failing, the server log says why.")
        return
    await message.reply_text(_describe(result))


async def kb_add(update: Update, context: AssistantContext) -> None:
    """/kb_add <title>, then the text on the next lines (or as a reply to a message)."""
    message = update.effective_message
    title, _, body = _args_text(update).partition("\n")
    replied = message.reply_to_message
    if not body.strip() and replied is not None:
        body = replied.text or replied.caption or ""
    if not title.strip() or not body.strip():
        await message.reply_text(KB_ADD_USAGE)
        return
    try:
        result = await asyncio.to_thread(
            context.services.knowledge.add_text, title.strip(), body,
            f"telegram:text:{title.strip()}", _actor(update), update.effective_user.id)
    except UserError as exc:
        await message.reply_text(str(exc))
        return
    await message.reply_text(_describe(result))


async def kb_list(update: Update, context: AssistantContext) -> None:
    """/kb_list [page]: documents, ten at a time."""
    arg = _args_text(update).strip()
    page = int(arg) if arg.isdigit() and int(arg) > 0 else 1
    knowledge = context.services.knowledge
    total = await asyncio.to_thread(knowledge.count)
    docs = await asyncio.to_thread(knowledge.list_documents, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    if not total:
        await update.effective_message.reply_text("The knowledge base is empty. Send me a file "
                                                  "or use /kb_add to add something.")
        return
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    lines = [f"#{d.id} {d.title} (v{d.version}, {d.chunk_count} chunks)" for d in docs]
    footer = f"Page {page} of {pages}, {total} documents."
    if page < pages:
        footer += f" Next: /kb_list {page + 1}"
    await update.effective_message.reply_text("\n".join(lines + ["", footer]) if lines else footer)


def _document_id(update: Update) -> int | None:
    arg = _args_text(update).strip().lstrip("#")
    return int(arg) if arg.isdigit() else None


async def _find_document(update: Update, context: AssistantContext, command: str):
    """(metadata, text) of the document the admin named, or None after replying why not."""
    doc_id = _document_id(update)
    if doc_id is None:
        await update.effective_message.reply_text(f"Usage: /{command} <document id>")
        return None
    found = await asyncio.to_thread(context.services.knowledge.show, doc_id)
    if found is None:
        await update.effective_message.reply_text(f"There is no document #{doc_id}.")
    return found


async def kb_show(update: Update, context: AssistantContext) -> None:
    """/kb_show <id>: metadata and the first lines."""
    found = await _find_document(update, context, "kb_show")
    if found is None:
        return
    info, text = found
    preview = "\n".join(text.splitlines()[:10])[:2500]
    await update.effective_message.reply_text(
        f"#{info.id} {info.title}\nSource: {info.source}\nVersion {info.version}, "
        f"{info.chunk_count} chunks, {info.size:,} characters, added "
        f"{info.created_at:%Y-%m-%d %H:%M} UTC\n\n{preview}")


async def kb_remove(update: Update, context: AssistantContext) -> None:
    """/kb_remove <id>: asks to confirm with a button."""
    found = await _find_document(update, context, "kb_remove")
    if found is None:
        return
    doc_id = found[0].id
    keyboard = InlineKeyboardMarkup([[
        InlineKeyboardButton("Remove", callback_data=f"kb:rm:{doc_id}"),
        InlineKeyboardButton("Cancel", callback_data="kb:cancel"),
    ]])
    await update.effective_message.reply_text(f"Remove #{doc_id} “{found[0].title}”?",
                                              reply_markup=keyboard)


async def kb_confirm(update: Update, context: AssistantContext) -> None:
    """The Remove / Cancel buttons; the admin check is repeated here."""
    query = update.callback_query
    if not _is_admin(update, context):  # buttons have no filters: the one check kept here
        await _refuse(update)
        return
    parts = (query.data or "").split(":")
    if parts[1:2] == ["rm"] and len(parts) == 3 and parts[2].isdigit():
        info = await asyncio.to_thread(context.services.knowledge.remove, int(parts[2]),
                                       _actor(update))
        text = f"Removed #{info.id} “{info.title}”." if info else "It was already removed."
    else:
        text = "Cancelled; nothing was removed."
    await query.answer()
    await query.edit_message_text(text)


async def kb_search(update: Update, context: AssistantContext) -> None:
    """/kb_search <query>: the best chunks with their scores."""
    query = _args_text(update).strip()
    if not query:
        await update.effective_message.reply_text("Usage: /kb_search <question or words>")
        return
    try:
        hits = await asyncio.to_thread(context.services.knowledge.search, query, 5)
    except UserError as exc:  # e.g. an index built with another embedding model
        await update.effective_message.reply_text(str(exc))
        return
    if not hits:
        await update.effective_message.reply_text("No matches.")
        return
    lines = [f"{h.score:.2f}  #{h.document_id} {h.title}: {' '.join(h.text.split())[:150]}"
             for h in hits]
    await update.effective_message.reply_text("\n\n".join(lines))


async def stats(update: Update, context: AssistantContext) -> None:
    """/stats: users, messages, 👍 rate overall and per adapter version, knowledge size, chart."""
    numbers = await asyncio.to_thread(context.services.stats.stats)
    lines = [f"Users: {numbers.users}", f"Questions: {numbers.questions}, answers: "
             f"{numbers.answers}",
             f"Ratings: {numbers.up} 👍 / {numbers.down} 👎 ({numbers.up_rate:.0%} 👍)",
             f"Knowledge base: {numbers.documents} documents, {numbers.chunks} chunks"]
    lines += [f"  adapter {a.version}: {a.up_rate:.0%} 👍 of {a.up + a.down}"
              for a in numbers.per_adapter]
    await update.effective_message.reply_text("\n".join(lines))
    chart = await asyncio.to_thread(rating_chart, numbers)
    await update.effective_message.reply_photo(chart, caption="👍 rate per adapter version")


async def feedback(update: Update, context: AssistantContext) -> None:
    """/feedback [n]: the latest 👎 answers, each with why it went wrong and a button to add its
    correction to the knowledge base; then the corrections held back from training."""
    arg = _args_text(update).strip()
    limit = min(int(arg), 20) if arg.isdigit() and int(arg) > 0 else 5
    review = context.services.review
    items = await asyncio.to_thread(review.complaints, limit)
    total, held = await asyncio.to_thread(review.held, limit)
    message = update.effective_message
    if not items and not total:
        await message.reply_text("No 👎 ratings yet.")
        return
    for item in items:
        c = item.complaint
        text = (f"👎×{c.downvotes} on answer #{c.message_id}\nQ: {c.question[:300]}\n"
                f"A: {c.answer[:500]}\nSources: {'; '.join(c.sources) or 'none'}"
                + (f"\nChecked: {c.grounding}" if c.grounding else "")
                + (f"\nThe model had said: {c.generated[:300]}" if c.generated else "")
                + f"\nWhy: {item.cause.explained}")
        shown = list(zip(c.correction_ids, c.corrections, strict=True))[-3:]
        text += "".join(f"\nCorrection #{cid}: {body[:300]}" for cid, body in shown)
        buttons = [[InlineKeyboardButton(f"📚 Add correction #{cid} to knowledge",
                                         callback_data=f"fb:kb:{cid}")] for cid, _ in shown]
        await message.reply_text(text, reply_markup=InlineKeyboardMarkup(buttons)
                                 if buttons else None)
    if total:
        await message.reply_text(f"Held back from training: {total} correction(s) the "
                                 "knowledge base does not back, or that many accounts sent "
                                 "alike. Add each to the knowledge base, let it train, or "
                                 "reject it.")
    for h in held:
        why = ("not backed by the knowledge base" if h.reason == "unsupported"
               else f"the same text came from {h.senders} accounts")
        await message.reply_text(
            f"Held correction #{h.id} ({why})\nQ: {h.question[:300]}\nCorrection: {h.text[:500]}",
            reply_markup=InlineKeyboardMarkup([[
                InlineKeyboardButton("📚 Add to knowledge", callback_data=f"fb:kb:{h.id}"),
                InlineKeyboardButton("✅ Train on it", callback_data=f"fb:ok:{h.id}"),
                InlineKeyboardButton("🚫 Reject", callback_data=f"fb:no:{h.id}")]]))


async def review_button(update: Update, context: AssistantContext) -> None:
    """The /feedback buttons: a correction to the knowledge base (and undo), train, reject."""
    query = update.callback_query
    if not _is_admin(update, context):  # buttons have no filters: checked here
        await _refuse(update)
        return
    parts = (query.data or "").split(":")
    review, actor = context.services.review, _actor(update)
    if len(parts) < 3 or not all(p.isdigit() for p in parts[2:]):
        await query.answer("That button is no longer valid.")
        return
    cid = int(parts[2])
    keyboard = None
    if parts[1] == "kb":
        try:
            result = await asyncio.to_thread(review.to_knowledge, cid, actor,
                                             update.effective_user.id)
        except UserError as exc:
            await query.answer(str(exc)[:200], show_alert=True)
            return
        if result is None:
            note = f"There is no correction #{cid} any more."
        else:
            doc = result.document
            duplicate = result.status.value == "duplicate"
            note = (f"📚 Correction #{cid} is in the knowledge base as #{doc.id} “{doc.title}”"
                    + (" (the same text was already there)" if duplicate else "")
                    + "; answers use it from now on, and it trains tonight.")
            if not duplicate:  # undo removes only what this button added
                keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(
                    "↩️ Undo", callback_data=f"fb:undo:{cid}:{doc.id}")]])
    elif parts[1] == "undo" and len(parts) == 4:
        await asyncio.to_thread(review.undo_knowledge, cid, int(parts[3]), actor)
        note = (f"↩️ Undone: #{parts[3]} left the knowledge base, and correction #{cid} is "
                "held for review again.")
    elif parts[1] in ("ok", "no"):
        done = await asyncio.to_thread(review.decide, cid, parts[1] == "ok", actor)
        note = (f"There is no correction #{cid} any more." if not done
                else f"✅ Correction #{cid} trains tonight." if parts[1] == "ok"
                else f"🚫 Correction #{cid} is rejected; it never trains.")
    else:
        await query.answer("That button is no longer valid.")
        return
    await query.answer()
    text = query.message.text if query.message and query.message.text else ""
    head, _, last = text.rpartition("\n\n")
    if head and last.startswith(REVIEW_NOTES):  # a button pressed before: replace its note
        text = head
    await query.edit_message_text(f"{text[:3500]}\n\n{note}", reply_markup=keyboard)


def register(application: Application) -> None:
    """Admin commands run only for ADMIN_IDS (PTB's `filters.User`); everyone else gets one
    refusal, from one handler."""
    admins = filters.User(user_id=set(application.bot_data["services"].settings.admin_ids))
    commands = {"kb_add": kb_add, "kb_list": kb_list, "kb_show": kb_show,
                "kb_remove": kb_remove, "kb_search": kb_search, "stats": stats,
                "feedback": feedback}
    for name, callback in commands.items():
        application.add_handler(CommandHandler(name, callback, filters=admins))
    application.add_handler(CommandHandler(list(commands), refuse))
    application.add_handler(CallbackQueryHandler(kb_confirm, pattern=r"^kb:"))
    application.add_handler(CallbackQueryHandler(review_button, pattern=r"^fb:"))
    private_files = filters.Document.ALL & filters.ChatType.PRIVATE
    application.add_handler(MessageHandler(private_files & admins, upload))
    application.add_handler(MessageHandler(private_files, upload_refused))

