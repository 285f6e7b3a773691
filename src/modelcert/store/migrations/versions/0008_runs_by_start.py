"""certification_runs: the (deployment, region) index takes started_at too

Trends (reports/trends.py: a pair's series, the matrix's sparklines, the API's per-pair
gauges) read a pair's runs in a time range; with months of history, the index on
(deployment_id, region) alone left SQLite scanning every run of the pair (a /metrics
scrape at 50 × 20 with 30 days of runs: 610 ms, 120 ms with this index). The wider
index serves every query the old one did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("certification_runs") as batch:
        batch.drop_index("ix_runs_deployment_region")
        batch.create_index(
            "ix_runs_deployment_region_started", ["deployment_id", "region", "started_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("certification_runs") as batch:
        batch.drop_index("ix_runs_deployment_region_started")
        batch.create_index("ix_runs_deployment_region", ["deployment_id", "region"])
