"""Ratings and corrections (tomorrow's training data), and forgetting a user on request."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from bot.storage.store import RatingOutcome, Store, UserInfo

logger = logging.getLogger(__name__)

THUMBS_UP = 1
THUMBS_DOWN = -1


class FeedbackService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def rate(self, message_id: int, user: UserInfo, value: int,
             chat_id: int | None = None) -> RatingOutcome:
        """Record `user`'s vote (+1 or -1) on assistant message `message_id`; with `chat_id`
        (where the button was pressed), only if the answer was given in that chat."""
        if value not in (THUMBS_UP, THUMBS_DOWN):
            raise ValueError(f"rating must be +1 or -1, not {value!r}")
        self.store.upsert_user(user)
        outcome = self.store.rate(message_id, user.id, value, chat_id)
        logger.info("Rating on message %s: %s", message_id, outcome.value)
        return outcome

    def correct(self, message_id: int, user: UserInfo, text: str) -> bool:
        """Store a better answer or a reason for a 👎; False unless `user` rated it 👎."""
        text = text.strip()
        if not text or self.store.user_vote(message_id, user.id) != THUMBS_DOWN:
            return False
        self.store.add_correction(message_id, user.id, text[:4000])
        logger.info("Correction stored for message %s", message_id)
        return True

    def invited_correction(self, message_id: int, user_id: int,
                           telegram_message_id: int) -> None:
        """The Telegram message asking `user_id` for a correction of `message_id` was sent."""
        self.store.set_correction_prompt(message_id, user_id, telegram_message_id)

    def correction_target(self, chat_id: int, replied_to: int, user_id: int) -> int | None:
        """The answer a reply to Telegram message `replied_to` corrects, if it is one."""
        return self.store.correction_target(chat_id, replied_to, user_id)

    def purge(self, retention_days: int, trained_until: datetime | None) -> dict[str, int]:
        """RETENTION_DAYS: delete conversations older than `retention_days`, keeping rated
        answers from before `trained_until` (a trained adapter's record)."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        counts = self.store.purge_before(cutoff, trained_until)
        logger.info("Retention (%d days): purged %s", retention_days, counts)
        return counts

    def forget(self, user_id: int) -> dict[str, int]:
        """/forget: delete what the user left here and exclude them from training for good."""
        counts = self.store.forget_user(user_id)
        logger.info("Forgot user %s: %s", user_id, counts)
        return counts
