"""Budgets (issue 13): a job may spend at most its `budget_usd`, everything together at
most `MODELCERT_DAILY_BUDGET_USD` per UTC day. A certification whose estimated cost would
take either past its limit is not started (it ends SKIPPED, saying which budget and
what it would have cost): a budget is kept before the money is spent, not afterwards.

Calls to a deployment with no known price (self-hosted, simulated without a demo price)
cost nothing that can be counted, so no budget holds them back. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelcert.cost.prices import format_usd
from modelcert.domain import Spending

# Tokens of a typical battery call, for an estimate before any run of the deployment is
# known: short prompts, answers of a sentence or a short count.
TYPICAL_INPUT_TOKENS = 40
TYPICAL_OUTPUT_TOKENS = 80


def budget_refusal(estimate_usd: float | None, spending: Spending) -> str | None:
    """Why a certification estimated at `estimate_usd` may not start; None if it may."""
    if estimate_usd is None or estimate_usd <= 0:
        return None
    job_budget = spending.job_budget_usd
    if job_budget is not None and spending.job_spent_usd + estimate_usd > job_budget:
        return (
            f"the job's budget {format_usd(job_budget)} would be exceeded (spent "
            f"{format_usd(spending.job_spent_usd)}, this certification "
            f"~{format_usd(estimate_usd)})"
        )
    daily = spending.daily_budget_usd
    if daily is not None and spending.day_spent_usd + estimate_usd > daily:
        return (
            f"today's budget {format_usd(daily)} (MODELCERT_DAILY_BUDGET_USD) would be "
            f"exceeded (spent {format_usd(spending.day_spent_usd)} today, this "
            f"certification ~{format_usd(estimate_usd)})"
        )
    return None


def total_cost(costs: Iterable[float | None]) -> float | None:
    """The sum of the known costs; None when none is known (no price: unknown, not free)."""
    known = [cost for cost in costs if cost is not None]
    return round(sum(known), 8) if known else None
