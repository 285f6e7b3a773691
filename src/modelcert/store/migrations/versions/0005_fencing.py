"""runs keyed by the workflow that opened them; heartbeat counters

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("certification_runs", sa.Column("run_key", sa.String(length=200), nullable=True))
    op.create_index("uq_runs_run_key", "certification_runs", ["run_key"], unique=True)
    op.add_column(
        "worker_heartbeats",
        sa.Column("beats", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.drop_column("beats")
    op.drop_index("uq_runs_run_key", table_name="certification_runs")
    with op.batch_alter_table("certification_runs") as batch:
        batch.drop_column("run_key")
