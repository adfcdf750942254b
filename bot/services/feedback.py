"""Ratings: one 👍/👎 per user per answer, changeable; they become tomorrow's training data."""

from __future__ import annotations

import logging

from bot.storage.store import RatingOutcome, Store, UserInfo

logger = logging.getLogger(__name__)

THUMBS_UP = 1
THUMBS_DOWN = -1


class FeedbackService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def rate(self, message_id: int, user: UserInfo, value: int) -> RatingOutcome:
        """Record `user`'s vote (+1 or -1) on assistant message `message_id`."""
        if value not in (THUMBS_UP, THUMBS_DOWN):
            raise ValueError(f"rating must be +1 or -1, not {value!r}")
        self.store.upsert_user(user)
        outcome = self.store.rate(message_id, user.id, value)
        logger.info("Rating on message %s: %s", message_id, outcome.value)
        return outcome
