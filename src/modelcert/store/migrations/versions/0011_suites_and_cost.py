"""Test suites and what certification costs.

suites: every version of every suite file loaded (name, content hash, the definition as
JSON and the YAML it came from). certification_runs: `suites` names the versions a run
ran, `cost_usd` what it cost and `estimate_usd` what it was expected to cost (a budget
reserves it while the run goes on). test_results: the suite a test came from, its
weight, its `required` flag, its assertions' outcomes and its cost. jobs keep the suites,
smoke mode and budget they were asked for; deployments get a per-request fee beside
their token prices. test_results.test_id grows to hold `suite/test` ids.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_name", sa.String(length=500), nullable=True),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("loaded_by", sa.String(length=200), nullable=True),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suites")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_suites_name_version")),
    )
    with op.batch_alter_table("certification_runs") as batch:
        batch.add_column(sa.Column("suites", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("estimate_usd", sa.Float(), nullable=True))
    # What was spent since a date (the daily budget, cost reports) reads runs by start.
    op.create_index("ix_runs_started_at", "certification_runs", ["started_at"])
    with op.batch_alter_table("test_results") as batch:
        batch.alter_column(
            "test_id", existing_type=sa.String(length=64), type_=sa.String(length=200)
        )
        batch.add_column(sa.Column("suite", sa.String(length=140), nullable=True))
        batch.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("required", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("assertions", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("suites", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("smoke", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("cost_per_request", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("cost_per_request")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("budget_usd")
        batch.drop_column("smoke")
        batch.drop_column("suites")
    with op.batch_alter_table("test_results") as batch:
        batch.drop_column("cost_usd")
        batch.drop_column("assertions")
        batch.drop_column("required")
        batch.drop_column("weight")
        batch.drop_column("suite")
        batch.alter_column(
            "test_id", existing_type=sa.String(length=200), type_=sa.String(length=64)
        )
    op.drop_index("ix_runs_started_at", table_name="certification_runs")
    with op.batch_alter_table("certification_runs") as batch:
        batch.drop_column("estimate_usd")
        batch.drop_column("cost_usd")
        batch.drop_column("suites")
    op.drop_table("suites")
