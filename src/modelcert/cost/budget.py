"""Budgets (issue 13): a job may spend at most its `budget_usd`, everything together at
most `MODELCERT_DAILY_BUDGET_USD` per UTC day. A certification whose estimated cost would
take either past its limit is not started (it ends SKIPPED, saying which budget and
what it would have cost): a budget is kept before the money is spent, not afterwards.

Calls to a deployment with no known price (self-hosted, simulated without a demo price)
cost nothing that can be counted, so no budget holds them back. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

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
            f"not started: the job's budget ${job_budget:.4f} would be exceeded "
            f"(spent ${spending.job_spent_usd:.4f}, this certification ~${estimate_usd:.4f})"
        )
    daily = spending.daily_budget_usd
    if daily is not None and spending.day_spent_usd + estimate_usd > daily:
        return (
            f"not started: today's budget ${daily:.4f} (MODELCERT_DAILY_BUDGET_USD) would "
            f"be exceeded (spent ${spending.day_spent_usd:.4f} today, this certification "
            f"~${estimate_usd:.4f})"
        )
    return None


def total_cost(costs: Iterable[float | None]) -> float | None:
    """The sum of the known costs; None when none is known (no price: unknown, not free)."""
    known = [cost for cost in costs if cost is not None]
    return round(sum(known), 8) if known else None
