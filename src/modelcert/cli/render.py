"""Terminal rendering of reports and the certification matrix (rich), and their JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
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


def tests_table(results: Sequence[TestResult]) -> Table:
    table = Table(title="Tests", show_lines=False)
    for column in ("test", "verdict", "latency ms", "TTFT ms", "retries", "category", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.test_id,
            styled(r.outcome.value),
            _ms(r.latency_ms),
            _ms(r.ttft_ms),
            str(r.retries),
            r.error_category.value if r.error_category else "",
            (r.detail or "")[:90],
        )
    return table


def print_outcome(console: Console, outcome: CertificationOutcome) -> None:
    score = outcome.score
    plan = outcome.plan
    console.print(tests_table(outcome.results))
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
