"""The SQL schema: the source of truth for users, conversations, ratings and knowledge.

Change it only together with an Alembic revision in `alembic/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A person who talked to the assistant; the id is the Telegram user id."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(128))
    language_code: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set by /forget: the user's history was deleted and they never become training data.
    forgotten_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Conversation(Base):
    """A run of messages in one chat; `/reset` ends it and the next message starts another."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_chat_active", "chat_id", "ended_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.id", cascade="all, delete-orphan"
    )


class Message(Base):
    """One turn. Assistant turns record what the model saw and which adapter answered."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # "user" | "assistant"
    text: Mapped[str] = mapped_column(Text)
    # The rendered prompt the model answered (retrieved context included): training data later.
    prompt: Mapped[str | None] = mapped_column(Text)
    chunk_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    adapter_version: Mapped[str | None] = mapped_column(String(64))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # For an answer, the chat message showing it; for a question, the chat message that asked.
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # An answer names the question it answers (in groups answers finish out of order).
    question_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL", name="fk_messages_question_id"),
        index=True
    )
    # The sentences the answer was checked against, how it was checked ("verified": the
    # model's words held up; "extractive": replaced by the evidence; "abstained"), and what
    # the model said before the check: a negative example when it was replaced.
    evidence: Mapped[list[dict] | None] = mapped_column(JSON)
    grounding: Mapped[str | None] = mapped_column(String(16))
    generated_text: Mapped[str | None] = mapped_column(Text)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class Rating(Base):
    """A user's 👍 (+1) or 👎 (-1) on an assistant message; changing a vote updates this row."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("message_id", "user_id", name="uq_ratings_message_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    value: Mapped[int] = mapped_column(SmallInteger)
    # The Telegram message (in the answer's chat) that invited a correction after this 👎.
    correction_prompt_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Document(Base):
    """A knowledge document and its full text; Chroma only indexes chunks of it."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("source", "version", name="uq_documents_source_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(512), index=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    text: Mapped[str] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    added_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Who changed the knowledge base, how, and when. Kept after the document is gone."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # "telegram:<user id>" or "cli:<os user>"
    action: Mapped[str] = mapped_column(String(32))  # add | replace | remove | reindex
    document_id: Mapped[int | None] = mapped_column(Integer, index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class ProcessedUpdate(Base):
    """The update journal: every Telegram update accepted, so a redelivered one is not handled
    twice, and one the process died on (no `done_at`) is handled after the restart."""

    __tablename__ = "processed_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # The update as Telegram sent it, kept only until it is handled (it holds the user's text).
    payload: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The chat message an answer was being streamed into: a recovered answer finishes it.
    reply_message_id: Mapped[int | None] = mapped_column(BigInteger)


class Correction(Base):
    """A better answer or a reason a user gave after rating an answer 👎."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"),
                                            index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # None: trainable as is. "held:unsupported" / "held:repeated": the nightly screen kept it out
    # of training for an admin to look at; "approved" (trains) or "rejected" (never trains).
    # The values: `bot.storage.training.HELD`, `APPROVED`, `REJECTED`.
    review: Mapped[str | None] = mapped_column(String(24), index=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RetrievalBoost(Base):
    """A small ranking nudge for one indexed chunk, recomputed nightly from the ratings of the
    answers that cited it (see `knowledge.retrieval.feedback_boosts`)."""

    __tablename__ = "retrieval_boosts"
    __table_args__ = (UniqueConstraint("chunk_id", name="uq_retrieval_boosts_chunk_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64))
    boost: Mapped[float] = mapped_column(Float)
    up: Mapped[int] = mapped_column(Integer, default=0)    # users whose 👍 answers cited it
    down: Mapped[int] = mapped_column(Integer, default=0)  # users who 👎 and corrected them
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The rated questions it applies to (`knowledge.retrieval.reach`): `BoostQuestion` ids;
    # None (computed before boosts had questions): every question.
    questions: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)


class BoostQuestion(Base):
    """A rated question that retrieval boosts apply to, stored once however many chunks its
    answers cited; replaced with the boosts at every recompute."""

    __tablename__ = "boost_questions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float16, the embedder's dimensions


class TrainingRun(Base):
    """One tuning run: what it trained on, with which knobs, how it scored, what was decided."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # dialog | nightly
    method: Mapped[str] = mapped_column(String(32))  # lora | prompt-tuning
    status: Mapped[str] = mapped_column(String(16))  # running | skipped | rejected | promoted | failed
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    serving_version: Mapped[str | None] = mapped_column(String(16))
    candidate_version: Mapped[str | None] = mapped_column(String(16))
    dataset_hash: Mapped[str | None] = mapped_column(String(64))
    data_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sizes: Mapped[dict] = mapped_column(JSON, default=dict)
    hyperparameters: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    decision: Mapped[dict] = mapped_column(JSON, default=dict)
