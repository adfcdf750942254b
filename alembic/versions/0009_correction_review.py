"""corrections: held back from training for an admin's review, and the admin's decision

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("review", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_corrections_review", ["review"])


def downgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.drop_index("ix_corrections_review")
        batch.drop_column("reviewed_at")
        batch.drop_column("review")
