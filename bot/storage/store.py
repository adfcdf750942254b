"""Typed reads and writes over the schema; services talk to SQL only through this."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import aliased

from bot.storage.db import Database
from bot.storage.models import (
    AuditEntry,
    Conversation,
    Correction,
    Document,
    Message,
    Rating,
    User,
    utcnow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserInfo:
    """Who wrote a message, independent of Telegram."""

    id: int
    username: str | None = None
    first_name: str | None = None
    language_code: str | None = None


@dataclass(frozen=True)
class Turn:
    role: str
    text: str


@dataclass(frozen=True)
class StoredAnswer:
    """An answer already recorded for a question (found again when its update is replayed)."""

    message_id: int
    text: str
    sources: list[str]
    grounding: str | None
    adapter_version: str | None
    latency_ms: int | None
    shown_as: int | None  # the chat message showing it; None if it never reached the chat


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    title: str
    source: str
    version: int
    chunk_count: int
    content_hash: str
    size: int  # characters of text
    added_by: int | None
    created_at: datetime


class RatingOutcome(Enum):
    CREATED = "created"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    NO_MESSAGE = "no_message"


def _affected(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (its result is a `CursorResult`)."""
    return int(result.rowcount or 0)


def _doc_info(doc: Document) -> DocumentInfo:
    return DocumentInfo(doc.id, doc.title, doc.source, doc.version, doc.chunk_count,
                        doc.content_hash, len(doc.text), doc.added_by, doc.created_at)


class Store:
    """Repository over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- users and conversations -------------------------------------------------------------

    def upsert_user(self, user: UserInfo) -> None:
        with self.db.write() as s:
            row = s.get(User, user.id)
            if row is None:
                s.add(User(id=user.id, username=user.username, first_name=user.first_name,
                           language_code=user.language_code))
            else:
                row.username, row.first_name = user.username, user.first_name
                row.language_code = user.language_code

    def active_conversation(self, chat_id: int) -> int:
        """The id of the chat's open conversation, starting one if there is none."""
        with self.db.write() as s:
            conv_id = s.scalar(
                select(Conversation.id)
                .where(Conversation.chat_id == chat_id, Conversation.ended_at.is_(None))
                .order_by(Conversation.id.desc())
                .limit(1)
            )
            if conv_id is None:
                conv = Conversation(chat_id=chat_id)
                s.add(conv)
                s.flush()
                conv_id = conv.id
            return conv_id

    def end_conversation(self, chat_id: int) -> bool:
        """Close the chat's open conversation; False if there was none."""
        with self.db.write() as s:
            result = s.execute(
                update(Conversation)
                .where(Conversation.chat_id == chat_id, Conversation.ended_at.is_(None))
                .values(ended_at=utcnow())
            )
            return bool(_affected(result))

    def recent_turns(self, conversation_id: int, limit: int, before: int | None = None,
                     since: datetime | None = None) -> list[Turn]:
        """The last `limit` messages of a conversation (those before message `before`, and
        written after `since`, when given), oldest first."""
        if limit <= 0:
            return []
        query = select(Message.role, Message.text).where(Message.conversation_id == conversation_id)
        if before is not None:
            query = query.where(Message.id < before)
        if since is not None:
            query = query.where(Message.created_at >= since)
        with self.db.read() as s:
            rows = s.execute(query.order_by(Message.id.desc()).limit(limit)).all()
        return [Turn(role, text) for role, text in reversed(rows)]

    def find_question(self, chat_id: int, telegram_message_id: int
                      ) -> tuple[int, int, StoredAnswer | None] | None:
        """The recorded question that chat message `telegram_message_id` asked, as (question
        id, conversation id, its answer if one was recorded); None if it was never recorded."""
        with self.db.read() as s:
            row = s.execute(
                select(Message.id, Message.conversation_id)
                .join(Conversation, Message.conversation_id == Conversation.id)
                .where(Conversation.chat_id == chat_id, Message.role == "user",
                       Message.telegram_message_id == telegram_message_id)
                .order_by(Message.id.desc()).limit(1)).first()
            if row is None:
                return None
            answer = s.scalar(select(Message).where(Message.question_id == row.id)
                              .order_by(Message.id).limit(1))
            stored = None if answer is None else StoredAnswer(
                answer.id, answer.text, list(answer.sources or []), answer.grounding,
                answer.adapter_version, answer.latency_ms, answer.telegram_message_id)
        return row.id, row.conversation_id, stored

    def add_message(self, conversation_id: int, role: str, text: str, *, user_id: int | None = None,
                    prompt: str | None = None, chunk_ids: list[str] | None = None,
                    sources: list[str] | None = None, adapter_version: str | None = None,
                    latency_ms: int | None = None, question_id: int | None = None,
                    evidence: list[dict] | None = None, grounding: str | None = None,
                    generated_text: str | None = None,
                    telegram_message_id: int | None = None) -> int:
        with self.db.write() as s:
            msg = Message(conversation_id=conversation_id, role=role, text=text, user_id=user_id,
                          prompt=prompt, chunk_ids=chunk_ids or [], sources=sources or [],
                          adapter_version=adapter_version, latency_ms=latency_ms,
                          question_id=question_id, evidence=evidence, grounding=grounding,
                          generated_text=generated_text, telegram_message_id=telegram_message_id)
            s.add(msg)
            s.flush()
            return msg.id

    def set_telegram_message_id(self, message_id: int, telegram_message_id: int) -> None:
        with self.db.write() as s:
            s.execute(update(Message).where(Message.id == message_id)
                      .values(telegram_message_id=telegram_message_id))

    # --- ratings -------------------------------------------------------------------------------

    def rate(self, message_id: int, user_id: int, value: int,
             chat_id: int | None = None) -> RatingOutcome:
        """Record or change one user's vote on an assistant message; with `chat_id`, only if
        the answer was given in that chat (a button's data can be forged, its chat cannot)."""
        with self.db.write() as s:
            row = s.execute(select(Message.role, Conversation.chat_id)
                            .join(Conversation, Message.conversation_id == Conversation.id)
                            .where(Message.id == message_id)).first()
            if row is None or row.role != "assistant" \
                    or (chat_id is not None and row.chat_id != chat_id):
                return RatingOutcome.NO_MESSAGE
            rating = s.scalar(select(Rating).where(Rating.message_id == message_id,
                                                   Rating.user_id == user_id))
            if rating is None:
                s.add(Rating(message_id=message_id, user_id=user_id, value=value))
                return RatingOutcome.CREATED
            if rating.value == value:
                return RatingOutcome.UNCHANGED
            rating.value = value
            return RatingOutcome.CHANGED

    def set_correction_prompt(self, message_id: int, user_id: int,
                              telegram_message_id: int) -> None:
        """Remember which Telegram message invited `user_id` to correct answer `message_id`."""
        with self.db.write() as s:
            s.execute(update(Rating).where(Rating.message_id == message_id,
                                           Rating.user_id == user_id)
                      .values(correction_prompt_id=telegram_message_id))

    def correction_target(self, chat_id: int, telegram_message_id: int,
                          user_id: int) -> int | None:
        """The answer that Telegram message `telegram_message_id` in `chat_id` invited `user_id`
        to correct, if it did (only the user who pressed 👎 may answer it)."""
        with self.db.read() as s:
            return s.scalar(
                select(Rating.message_id)
                .join(Message, Rating.message_id == Message.id)
                .join(Conversation, Message.conversation_id == Conversation.id)
                .where(Rating.correction_prompt_id == telegram_message_id,
                       Rating.user_id == user_id, Conversation.chat_id == chat_id))

    def user_vote(self, message_id: int, user_id: int) -> int | None:
        with self.db.read() as s:
            return s.scalar(select(Rating.value).where(Rating.message_id == message_id,
                                                       Rating.user_id == user_id))

    def add_correction(self, message_id: int, user_id: int, text: str) -> None:
        """Store a correction; the same text from the same user twice (a replayed update) once."""
        with self.db.write() as s:
            if s.scalar(select(Correction.id).where(
                    Correction.message_id == message_id, Correction.user_id == user_id,
                    Correction.text == text)) is None:
                s.add(Correction(message_id=message_id, user_id=user_id, text=text))

    def teachings(self, limit: int = 5000) -> list[tuple[str, str, int, int]]:
        """What users said answers their questions, newest first: (question, text, user id,
        +1/-1). A 👍 vouches for an answer's text and a 👎 against it (only answers grounded in
        the knowledge base: "verified" or "extractive"); a correction vouches for its own text,
        unless the nightly screen held it back or an admin rejected it."""
        from bot.storage.training import APPROVED

        question = aliased(Message)
        rated = (select(question.text, Message.text, Rating.user_id, Rating.value)
                 .join(Message, Message.id == Rating.message_id)
                 .join(question, question.id == Message.question_id)
                 .where(Message.grounding.in_(("verified", "extractive")))
                 .order_by(Rating.id.desc()).limit(limit))
        corrected = (select(question.text, Correction.text, Correction.user_id)
                     .join(Message, Message.id == Correction.message_id)
                     .join(question, question.id == Message.question_id)
                     .where(or_(Correction.review.is_(None), Correction.review == APPROVED))
                     .order_by(Correction.id.desc()).limit(limit))
        with self.db.read() as s:
            votes = [(q, t, u, 1 if v > 0 else -1) for q, t, u, v in s.execute(rated)]
            fixes = [(q, t, u, 1) for q, t, u in s.execute(corrected)]
        return fixes + votes

    def correction(self, correction_id: int) -> tuple[str, str, str | None] | None:
        """(question, correction text, review) of a correction, None if there is none."""
        question = aliased(Message)
        with self.db.read() as s:
            row = s.execute(select(question.text, Correction.text, Correction.review)
                            .join(Message, Message.id == Correction.message_id)
                            .outerjoin(question, question.id == Message.question_id)
                            .where(Correction.id == correction_id)).one_or_none()
        return None if row is None else (row[0] or "", row[1], row[2])

    def review_correction(self, correction_id: int, review: str, actor: str,
                          details: dict | None = None) -> bool:
        """Record an admin's decision on a correction, audited; False if there is none."""
        with self.db.write() as s:
            found = _affected(s.execute(update(Correction).where(Correction.id == correction_id)
                                        .values(review=review, reviewed_at=utcnow())))
            if found:
                s.add(AuditEntry(actor=actor, action=f"correction_{review}",
                                 details={"correction_id": correction_id, **(details or {})}))
        return bool(found)

    # --- privacy -------------------------------------------------------------------------------

    def forget_user(self, user_id: int) -> dict[str, int]:
        """Delete a user's messages (with the answers to them), ratings and corrections, and
        their private chat; mark them forgotten so they never become training data."""
        with self.db.write() as s:
            counts = {
                "ratings": _affected(s.execute(delete(Rating).where(Rating.user_id == user_id))),
                "corrections": _affected(s.execute(delete(Correction)
                                                   .where(Correction.user_id == user_id)))}
            asked = s.execute(select(Message.id, Message.conversation_id, Message.text)
                              .where(Message.user_id == user_id)).all()
            doomed = {mid for mid, _, _ in asked}
            # The answers to their questions (linked, so out-of-order group answers are right).
            doomed |= set(s.scalars(select(Message.id).where(Message.question_id.in_(doomed))))
            # Other people's answers whose stored prompt quotes them (group history): the
            # answer stays, the prompt goes, so it never becomes training data.
            texts = [text for _, _, text in asked if text.strip()]
            shared = {conv for _, conv, _ in asked}
            for mid, prompt in s.execute(select(Message.id, Message.prompt).where(
                    Message.conversation_id.in_(shared), Message.role == "assistant",
                    Message.prompt.is_not(None), Message.id.not_in(doomed))).all():
                if prompt and any(text in prompt for text in texts):
                    s.execute(update(Message).where(Message.id == mid)
                              .values(prompt=None, generated_text=None))
            private = select(Conversation.id).where(Conversation.chat_id == user_id)
            doomed |= set(s.scalars(select(Message.id).where(Message.conversation_id.in_(private))))
            s.execute(delete(Rating).where(Rating.message_id.in_(doomed)))
            s.execute(delete(Correction).where(Correction.message_id.in_(doomed)))
            counts["messages"] = _affected(s.execute(delete(Message).where(Message.id.in_(doomed))))
            s.execute(delete(Conversation).where(Conversation.chat_id == user_id))
            user = s.get(User, user_id)
            if user is not None:
                user.forgotten_at, user.username, user.first_name = utcnow(), None, None
        self.db.scrub()
        return counts

    def purge_before(self, cutoff: datetime, keep_rated_before: datetime | None) -> dict[str, int]:
        """Delete messages older than `cutoff` with their ratings and corrections, and the
        conversations left empty. Rated answers from before `keep_rated_before` (what a trained
        adapter learnt from) stay, with their questions, as that training's record; a user
        who asked to be forgotten has none left to keep."""
        with self.db.write() as s:
            old = select(Message.id).where(Message.created_at < cutoff)
            keep: set[int] = set()
            if keep_rated_before is not None:
                rated = set(s.scalars(select(Rating.message_id).join(Message, Message.id == Rating.message_id)
                                      .where(Message.created_at < keep_rated_before)))
                keep = rated | {q for q in s.scalars(select(Message.question_id)
                                                      .where(Message.id.in_(rated))) if q}
            doomed = set(s.scalars(old)) - keep
            counts = {"ratings": 0, "corrections": 0, "messages": 0}
            ids = sorted(doomed)
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                counts["ratings"] += _affected(s.execute(delete(Rating).where(Rating.message_id.in_(part))))
                counts["corrections"] += _affected(s.execute(delete(Correction)
                                                             .where(Correction.message_id.in_(part))))
                counts["messages"] += _affected(s.execute(delete(Message).where(Message.id.in_(part))))
            counts["conversations"] = _affected(s.execute(
                delete(Conversation).where(Conversation.started_at < cutoff,
                                           ~Conversation.messages.any())))
        self.db.scrub()
        return counts

    # --- documents (every change writes an audit entry in the same transaction) --------------

    def document_by_hash(self, content_hash: str) -> DocumentInfo | None:
        with self.db.read() as s:
            doc = s.scalar(select(Document).where(Document.content_hash == content_hash).limit(1))
            return _doc_info(doc) if doc else None

    def document_by_source(self, source: str) -> DocumentInfo | None:
        with self.db.read() as s:
            doc = s.scalar(select(Document).where(Document.source == source)
                           .order_by(Document.version.desc()).limit(1))
            return _doc_info(doc) if doc else None

    def document(self, document_id: int) -> DocumentInfo | None:
        with self.db.read() as s:
            doc = s.get(Document, document_id)
            return _doc_info(doc) if doc else None

    def add_document(self, *, title: str, source: str, text: str, content_hash: str,
                     chunk_count: int, added_by: int | None, actor: str) -> DocumentInfo:
        with self.db.write() as s:
            doc = Document(title=title, source=source, text=text, content_hash=content_hash,
                           chunk_count=chunk_count, added_by=added_by, version=1)
            s.add(doc)
            s.flush()
            s.add(AuditEntry(actor=actor, action="add", document_id=doc.id,
                             details={"title": title, "source": source, "chunks": chunk_count}))
            return _doc_info(doc)

    def replace_document(self, document_id: int, *, title: str, text: str, content_hash: str,
                         chunk_count: int, added_by: int | None, actor: str) -> DocumentInfo:
        """Store new content for a document under the next version number."""
        with self.db.write() as s:
            doc = s.get(Document, document_id)
            if doc is None:
                raise KeyError(document_id)
            doc.title, doc.text, doc.content_hash = title, text, content_hash
            doc.chunk_count, doc.added_by, doc.version = chunk_count, added_by, doc.version + 1
            doc.created_at = utcnow()
            s.flush()
            s.add(AuditEntry(actor=actor, action="replace", document_id=doc.id,
                             details={"title": title, "version": doc.version,
                                      "chunks": chunk_count}))
            return _doc_info(doc)

    def delete_document(self, document_id: int, actor: str) -> DocumentInfo | None:
        with self.db.write() as s:
            doc = s.get(Document, document_id)
            if doc is None:
                return None
            info = _doc_info(doc)
            s.delete(doc)
            s.add(AuditEntry(actor=actor, action="remove", document_id=document_id,
                             details={"title": info.title, "source": info.source,
                                      "version": info.version}))
            return info

    def audit(self, actor: str, action: str, details: dict) -> None:
        with self.db.write() as s:
            s.add(AuditEntry(actor=actor, action=action, details=details))

    def audit_entries(self, limit: int = 50) -> list[AuditEntry]:
        with self.db.read() as s:
            return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))

    def list_documents(self, offset: int = 0, limit: int | None = None) -> list[DocumentInfo]:
        with self.db.read() as s:
            query = select(Document).order_by(Document.id).offset(offset).limit(limit)
            return [_doc_info(d) for d in s.scalars(query)]

    def current_versions(self, document_ids: set[int]) -> dict[int, int]:
        """{document id: current version} for those of `document_ids` that still exist."""
        if not document_ids:
            return {}
        with self.db.read() as s:
            rows = s.execute(select(Document.id, Document.version)
                             .where(Document.id.in_(document_ids))).all()
        return {doc_id: version for doc_id, version in rows}

    def document_text(self, document_id: int) -> str | None:
        with self.db.read() as s:
            return s.scalar(select(Document.text).where(Document.id == document_id))

    def knowledge_signature(self) -> tuple[int, int, int]:
        """(documents, highest id, sum of versions): changes whenever the knowledge base does."""
        with self.db.read() as s:
            row = s.execute(select(func.count(Document.id), func.max(Document.id),
                                   func.sum(Document.version))).one()
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    def document_texts(self, ids: Iterable[int] | None = None) -> Iterator[tuple[int, str, str]]:
        """(id, title, text) of every document, or of those in `ids`, in pages."""
        query = select(Document.id, Document.title, Document.text).order_by(Document.id)
        if ids is not None:
            query = query.where(Document.id.in_(list(ids)))
        offset = 0
        while True:
            with self.db.read() as s:
                rows = s.execute(query.offset(offset).limit(200)).all()
            yield from ((doc_id, title, text) for doc_id, title, text in rows)
            if len(rows) < 200:
                return
            offset += 200

    def count_documents(self) -> int:
        with self.db.read() as s:
            return s.scalar(select(func.count(Document.id))) or 0
