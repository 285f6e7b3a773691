"""Terminal rendering of reports and the certification matrix (rich), and their JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelcert.domain import Score, TestResult

if TYPE_CHECKING:  # the CLI starts faster without the engine's and the ORM's imports
    from modelcert.certify.engine import CertificationOutcome
    from modelcert.store.models import Certification, Deployment

STATUS_STYLE = {
    "CERTIFIED": "bold green",
    "QUALITY_WARNING": "yellow",
    "FAILED": "bold red",
    "ERROR": "magenta",
    "INCOMPLETE": "magenta",
    "RUNNING": "cyan",
    "CANCELLED": "dim",
    "PASSED": "green",
    "SKIPPED": "dim",
    "NOT_RUN": "magenta",
}
SIMULATION_NOTE = (
    "[bold magenta]SIMULATION[/]: these results come from the sim provider, not a real model."
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def verdict_figures(score: Score) -> str:
    """`rating badge`, or why there is none."""
    if score.rating is None or score.badge is None:
        return "(no verdict)"
    return f"{score.rating} {score.badge.value}"


def usd(value: float | None) -> str:
    """`$0.000412`, or `—` when no price was known."""
    return "—" if value is None else f"${value:.6f}"


def _weighing(r: TestResult) -> str:
    """` ×2 required` for a suite's test that does not count as one plain test."""
    parts = []
    if r.weight != 1.0:
        parts.append(f"×{r.weight:g}")
    if r.required:
        parts.append("required")
    return (" " + " ".join(parts)) if parts else ""


def failed_assertions(
    outcomes: Sequence[dict[str, Any]] | None, prefix: str = "", spared: bool = False
) -> list[str]:
    """`2.1 contains: '30 days' not found…` for each assertion that failed (depth first;
    an alternative that failed under an any-of that passed is not listed)."""
    lines: list[str] = []
    for index, outcome in enumerate(outcomes or (), start=1):
        path = f"{prefix}{index}"
        if not outcome.get("passed") and not spared:
            label = outcome.get("description") or outcome.get("type", "?")
            lines.append(f"{path} {label}: {outcome.get('detail') or 'failed'}")
        children = outcome.get("children")
        if isinstance(children, list):
            passed_any = outcome.get("type") == "any-of" and bool(outcome.get("passed"))
            lines.extend(failed_assertions(children, f"{path}.", spared or passed_any))
    return lines


def tests_table(results: Sequence[TestResult]) -> Table:
    table = Table(title="Tests", show_lines=False)
    for column in ("test", "verdict", "latency ms", "TTFT ms", "retries", "category", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.test_id + _weighing(r),
            styled(r.outcome.value),
            _ms(r.latency_ms),
            _ms(r.ttft_ms),
            str(r.retries),
            r.error_category.value if r.error_category else "",
            (r.detail or "")[:90],
        )
    return table


def cost_line(outcome: CertificationOutcome) -> str:
    """`cost: $0.000412 (13 calls, 520 input + 1,040 output tokens, prices seed:…)`, or
    `cost: unknown (no price for lab/model…)`."""
    results = outcome.results
    calls = sum(r.attempts for r in results)
    tokens_in = sum(r.input_tokens or 0 for r in results)
    tokens_out = sum(r.output_tokens or 0 for r in results)
    cost = outcome.cost_usd
    if cost is None:
        return (
            f"cost: unknown (no price for {outcome.plan.deployment_label}: set one with "
            f"`modelcert price set`; {calls} calls, {tokens_in:,} input + {tokens_out:,} "
            "output tokens)"
        )
    price = outcome.plan.price
    source = f", {price.source} prices" if price is not None else ""
    return (
        f"cost: {usd(cost)} ({calls} calls, {tokens_in:,} input + {tokens_out:,} output "
        f"tokens{source})"
    )


def print_outcome(console: Console, outcome: CertificationOutcome) -> None:
    score = outcome.score
    plan = outcome.plan
    if outcome.refusal is not None:
        # A budget kept the certification from starting: nothing ran, nothing was spent.
        console.print(
            f"[bold yellow]{escape(plan.deployment_label)} in {outcome.region}: NOT STARTED[/] "
            f"(run #{outcome.run_id}): {escape(outcome.refusal)}",
            highlight=False,
        )
        if plan.suites:
            console.print(f"suites: {', '.join(plan.suites)}", highlight=False)
        return
    console.print(tests_table(outcome.results))
    failures = [
        (r, failed_assertions(r.assertions))
        for r in outcome.results
        if r.suite is not None and r.assertions
    ]
    for r, lines in failures:
        for line in lines:
            console.print(f"  {r.test_id}: assertion {line}", markup=False, highlight=False)
    console.print(
        f"{plan.deployment_label} in {outcome.region}: {styled(score.status.value)}  "
        f"rating {verdict_figures(score)}  score {score.score if score.score is not None else '-'}"
        f"/100  passed {score.tests_passed}/{score.tests_total} "
        f"(skipped {score.tests_skipped})  avg latency {_ms(score.avg_latency_ms)} ms  "
        f"retries {score.total_retries}  run #{outcome.run_id}  {outcome.duration_s:.1f} s"
    )
    if score.error_category:
        console.print(f"decisive error: {score.error_category.value}: {score.error_message}")
    elif score.error_message:
        console.print(score.error_message)
    if plan.suites:
        console.print(f"suites: {', '.join(plan.suites)}", highlight=False)
    console.print(cost_line(outcome), markup=False, highlight=False)
    if outcome.simulated:
        console.print(SIMULATION_NOTE)


def outcome_json(outcome: CertificationOutcome) -> dict[str, Any]:
    score = outcome.score
    return {
        "deployment": outcome.plan.deployment_label,
        "deployment_id": outcome.plan.deployment_id,
        "region": outcome.region,
        "run_id": outcome.run_id,
        "simulated": outcome.simulated,
        "status": score.status.value,
        "rating": score.rating,
        "badge": score.badge.value if score.badge else None,
        "score": score.score,
        "success_rate": score.success_rate,
        "tests_passed": score.tests_passed,
        "tests_failed": score.tests_failed,
        "tests_skipped": score.tests_skipped,
        "avg_latency_ms": score.avg_latency_ms,
        "total_retries": score.total_retries,
        "error_category": score.error_category.value if score.error_category else None,
        "error_message": score.error_message,
        "duration_s": round(outcome.duration_s, 3),
        "suites": list(outcome.plan.suites),
        "cost_usd": outcome.cost_usd,
        "refusal": outcome.refusal,
        "tests": [
            {
                "test_id": r.test_id,
                "outcome": r.outcome.value,
                "latency_ms": r.latency_ms,
                "ttft_ms": r.ttft_ms,
                "retries": r.retries,
                "error_category": r.error_category.value if r.error_category else None,
                "error_code": r.error_code,
                "http_status": r.http_status,
                "error_message": r.error_message,
                "detail": r.detail,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "suite": r.suite,
                "weight": r.weight,
                "required": r.required,
                "assertions": r.assertions,
                "cost_usd": r.cost_usd,
            }
            for r in outcome.results
        ],
    }


def matrix_table(certifications: Sequence[Certification]) -> Table:
    """Deployments × regions; each cell the verdict, rating and badge."""
    regions = sorted({c.region for c in certifications})
    rows: dict[str, dict[str, Certification]] = {}
    for c in certifications:
        label = f"{c.deployment.provider.slug}/{c.deployment.provider_model_id}"
        rows.setdefault(label, {})[c.region] = c
    table = Table(title="Certification matrix")
    table.add_column("deployment")
    for region in regions:
        table.add_column(region)
    for label, cells in rows.items():
        rendered = [label]
        for region in regions:
            cell = cells.get(region)
            rendered.append("" if cell is None else _matrix_cell(cell))
        table.add_row(*rendered)
    return table


def _matrix_cell(c: Certification) -> str:
    line = styled(c.status)
    if c.rating is not None:
        line += f" {c.rating} {c.badge}"
    if c.status == "INCOMPLETE":
        line += "\n[dim]incomplete: no new verdict[/]"
    elif c.error_category and c.status != "CERTIFIED":
        line += f"\n[dim]{c.error_category}[/]"
    elif c.total_retries:
        line += f"\n[dim]{c.total_retries} retries[/]"
    return line


def certification_json(c: Certification) -> dict[str, Any]:
    return {
        "deployment_id": c.deployment_id,
        "deployment": f"{c.deployment.provider.slug}/{c.deployment.provider_model_id}",
        "region": c.region,
        "status": c.status,
        "rating": c.rating,
        "badge": c.badge,
        "score": c.score,
        "tests_passed": c.tests_passed,
        "tests_total": c.tests_total,
        "avg_latency_ms": c.avg_latency_ms,
        "total_retries": c.total_retries,
        "error_category": c.error_category,
        "error_message": c.error_message,
        "simulated": c.simulated,
        "certified_at": c.certified_at.isoformat() if c.certified_at else None,
        "expires_at": c.expires_at.isoformat() if c.expires_at else None,
        "last_run_id": c.last_run_id,
    }


def catalog_table(deployments: Sequence[Deployment]) -> Table:
    table = Table(title="Catalog")
    for column in ("id", "provider", "model id", "model", "vendor", "type", "regions", "active"):
        table.add_column(column, overflow="fold")
    for d in deployments:
        table.add_row(
            str(d.id),
            f"{d.provider.slug} ({d.provider.kind})",
            d.provider_model_id,
            d.model.name,
            d.model.vendor,
            d.inference_type,
            ", ".join(d.provider.regions),
            "yes" if d.active else "no",
        )
    return table
