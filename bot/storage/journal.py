"""The update journal: every Telegram update accepted, kept until it is handled, so that one a
dead process left unfinished is handled after the restart (see `bot.resilience`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from bot.storage.db import Database
from bot.storage.models import ProcessedUpdate, utcnow
from bot.storage.store import _affected


@dataclass(frozen=True)
class PendingUpdate:
    """A journaled update that was never finished."""

    update_id: int
    received_at: datetime
    payload: dict | None
    reply_message_id: int | None


def _aware(at: datetime) -> datetime:
    """SQLite hands back timezone-less datetimes; everything stored is UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class UpdateJournal:
    """The `processed_updates` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self, update_id: int, payload: dict) -> bool:
        """Journal an update before handling it; False if it was already journaled (Telegram
        redelivered it, or a webhook delivery was retried while the first was handled)."""
        with self.db.write() as s:
            if s.get(ProcessedUpdate, update_id) is not None:
                return False
            s.add(ProcessedUpdate(update_id=update_id, payload=payload))
            return True

    def finish(self, update_id: int) -> None:
        """The update was handled: drop its payload (the user's words) and mark it done."""
        with self.db.write() as s:
            s.execute(update(ProcessedUpdate).where(ProcessedUpdate.update_id == update_id)
                      .values(done_at=utcnow(), payload=None))

    def unfinished(self) -> list[PendingUpdate]:
        """Updates accepted but never finished (the process died while handling them), oldest
        first."""
        with self.db.read() as s:
            rows = s.execute(select(ProcessedUpdate.update_id, ProcessedUpdate.at,
                                    ProcessedUpdate.payload, ProcessedUpdate.reply_message_id)
                             .where(ProcessedUpdate.done_at.is_(None))
                             .order_by(ProcessedUpdate.update_id)).all()
        return [PendingUpdate(uid, _aware(at), payload, reply)
                for uid, at, payload, reply in rows]

    def set_reply(self, update_id: int, chat_message_id: int) -> None:
        """The chat message an answer to this update is being streamed into."""
        with self.db.write() as s:
            s.execute(update(ProcessedUpdate).where(ProcessedUpdate.update_id == update_id)
                      .values(reply_message_id=chat_message_id))

    def forget_old(self, older_than: timedelta = timedelta(days=7)) -> int:
        """Drop finished journal entries older than `older_than` (Telegram stops redelivering
        an update after a day)."""
        with self.db.write() as s:
            result = s.execute(delete(ProcessedUpdate)
                               .where(ProcessedUpdate.at < utcnow() - older_than,
                                      ProcessedUpdate.done_at.is_not(None)))
            return _affected(result)
