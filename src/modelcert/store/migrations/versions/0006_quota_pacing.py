"""quota_pacing: the throttle state per provider quota, shared by the workers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_pacing",
        sa.Column("quota", sa.String(length=300), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("next_start", sa.Float(), nullable=False),
        sa.Column("measuring", sa.Boolean(), nullable=False),
        sa.Column("probing", sa.Boolean(), nullable=False),
        sa.Column("last_throttled", sa.Float(), nullable=False),
        sa.Column("last_served", sa.Float(), nullable=False),
        sa.Column("last_adjusted", sa.Float(), nullable=False),
        sa.Column("starts", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("quota", name=op.f("pk_quota_pacing")),
    )


def downgrade() -> None:
    op.drop_table("quota_pacing")
