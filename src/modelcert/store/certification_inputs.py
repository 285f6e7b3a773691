"""What a certification is planned from, read in one transaction: the deployment, the
suites it runs (`store.suite_selection`), the price of its calls, the deployments that
judge its `llm-judge` assertions, and the budgets that apply (what was spent is read
when the run opens, under the budget lock: `store.spending.spending_now`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from modelcert.domain import (
    GLOBAL_REGION,
    CertificationInputs,
    JudgeTarget,
    Spending,
)
from modelcert.errors import UserError
from modelcert.store import repo
from modelcert.store.cost_report import recent_usage
from modelcert.store.deployment_prices import deployment_price
from modelcert.store.models import Job
from modelcert.store.suite_selection import BUILTIN, SMOKE, choose_suites
from modelcert.suites.definition import every_assertion


def load_certification_inputs(
    session: Session,
    ref: str | int,
    region: str,
    *,
    job_id: str | None = None,
    suites: Sequence[str] | None = None,
    smoke: bool = False,
    budget_usd: float | None = None,
    daily_budget_usd: float | None = None,
) -> CertificationInputs:
    """Everything `certify.plan` and the budget check need. A job's own choice of suites,
    smoke mode and budget apply unless the call names its own."""
    deployment = repo.find_deployment(session, ref)
    repo.check_region(deployment.provider, region)
    spec = repo.deployment_spec(deployment)
    job = session.get(Job, job_id) if job_id is not None else None
    if job is not None:
        suites = suites if suites is not None else job.suites
        smoke = smoke or job.smoke
        budget_usd = budget_usd if budget_usd is not None else job.budget_usd
    requested = list(suites) if suites else None
    if smoke:  # the smoke subset instead of the whole battery, beside any suites named
        requested = [name for name in requested or () if name != BUILTIN] + [SMOKE]
    choice = choose_suites(session, spec, requested)
    spending = Spending(job_budget_usd=budget_usd, daily_budget_usd=daily_budget_usd)
    judges = {
        judge_ref: _judge_target(session, judge_ref, region)
        for judge_ref in sorted(judge_refs(definition for _, definition in choice.suites))
    }
    return CertificationInputs(
        spec=spec,
        builtin=choice.builtin,
        suites=choice.suites,
        suite_refs=tuple(choice.refs),
        price=deployment_price(deployment).price,
        judges=judges,
        spending=spending,
        history=tuple(recent_usage(session, deployment.id, region)) if spending.limited else (),
    )


def judge_refs(definitions: Iterable[dict[str, Any]]) -> set[str]:
    """The `judge` of every llm-judge assertion in these suites (nested ones included)."""
    return {
        str(assertion["judge"])
        for definition in definitions
        for assertion in every_assertion(definition)
        if assertion.get("type") == "llm-judge" and assertion.get("judge")
    }


def _judge_target(session: Session, judge_ref: str, region: str) -> JudgeTarget:
    """The judge `provider/model-id[@region]`: in the region it names, else the certified
    region when its provider serves it, else its provider's first."""
    label, _, judge_region = judge_ref.partition("@")
    try:
        deployment = repo.find_deployment(session, label)
        if judge_region:
            repo.check_region(deployment.provider, judge_region)
    except UserError as exc:
        raise UserError(f"llm-judge {judge_ref!r}: {exc.message}", field="suite") from exc
    regions = list(deployment.provider.regions)
    if not judge_region:
        judge_region = region if region in regions else (regions[0] if regions else GLOBAL_REGION)
    return JudgeTarget(
        repo.deployment_spec(deployment), judge_region, deployment_price(deployment).price
    )
