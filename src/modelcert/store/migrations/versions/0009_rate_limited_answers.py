"""test_results.rate_limited: how many RATE_LIMIT answers (429s, throttling errors) a
test got; `retries` counts every retry, whatever its cause, so the dashboard could only
say how many tests waited for a rate limit, not how many 429s there were

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before this migration read 0: their 429s were not counted.
    with op.batch_alter_table("test_results") as batch:
        batch.add_column(
            sa.Column("rate_limited", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("test_results") as batch:
        batch.drop_column("rate_limited")
