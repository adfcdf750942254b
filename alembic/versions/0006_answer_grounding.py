"""answers: the question they answer, their evidence and how they were checked;
ratings: the message that invited a correction

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("question_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("grounding", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("generated_text", sa.Text(), nullable=True))
        batch.create_index("ix_messages_question_id", ["question_id"])
        batch.create_foreign_key("fk_messages_question_id", "messages", ["question_id"], ["id"],
                                 ondelete="SET NULL")
    with op.batch_alter_table("ratings") as batch:
        # The Telegram message that invited a correction after this 👎: a reply to it is one.
        batch.add_column(sa.Column("correction_prompt_id", sa.BigInteger(), nullable=True))
    # Link existing answers the way the code used to guess: the latest question before them.
    messages = sa.table("messages", sa.column("id", sa.Integer),
                        sa.column("conversation_id", sa.Integer),
                        sa.column("role", sa.String), sa.column("question_id", sa.Integer))
    asked = sa.alias(messages, "asked")
    latest_question = (sa.select(sa.func.max(asked.c.id))
                       .where(asked.c.conversation_id == messages.c.conversation_id,
                              asked.c.role == "user", asked.c.id < messages.c.id)
                       .scalar_subquery())
    op.execute(messages.update().where(messages.c.role == "assistant")
               .values(question_id=latest_question))


def downgrade() -> None:
    with op.batch_alter_table("ratings") as batch:
        batch.drop_column("correction_prompt_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("fk_messages_question_id", type_="foreignkey")
        batch.drop_index("ix_messages_question_id")
        batch.drop_column("generated_text")
        batch.drop_column("grounding")
        batch.drop_column("evidence")
        batch.drop_column("question_id")
