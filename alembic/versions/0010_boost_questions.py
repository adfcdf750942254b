"""retrieval boosts: the rated questions each boost applies to

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "boost_questions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    # Boosts computed before hold none and apply to every question, as they did, until the
    # next recompute.
    with op.batch_alter_table("retrieval_boosts") as batch:
        batch.add_column(sa.Column("questions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retrieval_boosts") as batch:
        batch.drop_column("questions")
    op.drop_table("boost_questions")
