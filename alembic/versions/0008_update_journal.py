"""update journal: unfinished Telegram updates are handled after a crash

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("processed_updates") as batch:
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reply_message_id", sa.BigInteger(), nullable=True))
    # Updates recorded before the journal were handled (they only ever held an id).
    op.execute("UPDATE processed_updates SET done_at = at")
    op.create_index("ix_messages_telegram_message_id", "messages", ["telegram_message_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_telegram_message_id", table_name="messages")
    with op.batch_alter_table("processed_updates") as batch:
        batch.drop_column("reply_message_id")
        batch.drop_column("done_at")
        batch.drop_column("payload")
