"""The three renderings of a report: JSON (the schema tools read), Markdown (people, PR
comments) and JUnit XML (CI dashboards: one test case per deployment × region). Pure."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from modelcert.errors import UserError
from modelcert.reports.build import (
    EXPIRED,
    MESSAGE_LIMIT,
    NEVER_CERTIFIED,
    SCHEMA,
    VALID_STATUSES,
    Entry,
    Report,
    when_iso,
)

FORMATS = ("json", "markdown", "junit")
MEDIA_TYPES = {
    "json": "application/json",
    "markdown": "text/markdown; charset=utf-8",
    "junit": "application/xml",
}

# States beyond the stored statuses: what a reader needs to tell apart.


def _short(text: str | None, limit: int = MESSAGE_LIMIT) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def report_json(report: Report) -> dict[str, Any]:
    """The report as a JSON-ready dict; `schema` names its version."""
    valid = sum(e.valid for e in report.entries)
    return {
        "schema": SCHEMA,
        "generated_at": when_iso(report.generated_at),
        "since": when_iso(report.since),
        "filters": {
            "provider": report.filters.provider,
            "region": report.filters.region,
            "model": report.filters.model,
            "since": report.filters.since,
        },
        "simulated": report.simulated,
        "summary": {
            "total": len(report.entries),
            "valid": valid,
            "not_valid": len(report.entries) - valid,
            "changes": len(report.changes),
        },
        "certifications": [
            {
                "deployment_id": e.deployment_id,
                "deployment": e.deployment,
                "provider": e.provider,
                "model_id": e.model_id,
                "model": e.model,
                "region": e.region,
                "status": e.status,
                "state": e.state,
                "valid": e.valid,
                "reason": e.reason,
                "rating": e.rating,
                "score": e.score,
                "badge": e.badge,
                "simulated": e.simulated,
                "certified_at": when_iso(e.certified_at),
                "expires_at": when_iso(e.expires_at),
                "error_category": e.error_category,
                "error_message": e.error_message,
                "last_run_id": e.last_run_id,
                "suites": list(e.suites),
                "last_run_cost_usd": e.last_run_cost_usd,
            }
            for e in report.entries
        ],
        "changes": [
            {
                "deployment_id": c.deployment_id,
                "deployment": report.label(c.deployment_id),
                "region": c.region,
                "from": c.from_state,
                "to": c.to_state,
                "changed_at": when_iso(c.changed_at),
                "run_id": c.run_id,
                "error_category": c.error_category,
                "error_message": c.error_message,
            }
            for c in report.changes
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_json(report), indent=2) + "\n"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def md(text: object) -> str:
    """Text safe inside a Markdown table cell: one line, markup characters escaped."""
    return _MD_SPECIAL.sub(r"\\\1", _short(str(text)))


_STATE_MARK = {"CERTIFIED": "✅", "QUALITY_WARNING": "⚠️"}


def _cell(e: Entry) -> str:
    text = f"{_STATE_MARK.get(e.state, '❌')} {e.state}"
    if e.valid and e.rating is not None:
        text += f" {e.rating} {e.badge}"
    elif not e.valid and e.error_category and e.state not in (EXPIRED, NEVER_CERTIFIED):
        text += f" ({e.error_category})"
    return md(text)


def render_markdown(report: Report) -> str:
    """A summary, the deployment × region matrix, what is not certified and why, and the
    changes; a SIMULATION banner when any result comes from the sim provider."""
    valid = sum(e.valid for e in report.entries)
    lines = ["# modelcert certification report", ""]
    if report.simulated:
        lines += [
            "> **SIMULATION**: results marked *(simulated)* come from the `sim` provider, "
            "not a real model.",
            "",
        ]
    lines += [
        f"Generated {when_iso(report.generated_at)}. {valid} of {len(report.entries)} "
        "deployment × region pairs are certified.",
        "",
        "## Matrix",
        "",
    ]
    regions = sorted({e.region for e in report.entries})
    rows: dict[str, dict[str, Entry]] = {}
    for e in report.entries:
        label = e.deployment + (" (simulated)" if e.simulated else "")
        rows.setdefault(label, {})[e.region] = e
    if rows:
        lines.append("| deployment | " + " | ".join(md(r) for r in regions) + " |")
        lines.append("|---" * (len(regions) + 1) + "|")
        for label, cells in rows.items():
            rendered = [_cell(cells[r]) if r in cells else "–" for r in regions]
            lines.append(f"| {md(label)} | " + " | ".join(rendered) + " |")
    else:
        lines.append("No deployments match.")
    costs = [e.last_run_cost_usd for e in report.entries if e.last_run_cost_usd is not None]
    if costs:
        lines += [
            "",
            f"The latest runs of {len(costs)} pairs cost ${sum(costs):.6f} together "
            "(at the deployments' prices; `modelcert cost` has every run).",
        ]
    failing = [e for e in report.entries if not e.valid and e.state != NEVER_CERTIFIED]
    never = len([e for e in report.entries if e.state == NEVER_CERTIFIED])
    if failing or never:
        lines += ["", "## Not certified", ""]
        lines += [f"- {md(e.deployment)} in {md(e.region)}: {md(e.reason)}" for e in failing]
        if never:
            lines.append(f"- {never} deployment × region pairs were never certified.")
    lines += ["", f"## Changes since {when_iso(report.since)}", ""]
    for c in report.changes:
        before = c.from_state or "new"
        line = f"- {when_iso(c.changed_at)}: {md(report.label(c.deployment_id))} in {md(c.region)}"
        line += f": {md(before)} → {md(c.to_state)}"
        if c.error_category and c.to_state not in VALID_STATUSES:
            line += f" ({md(c.error_category)})"
        lines.append(line)
    if not report.changes:
        lines.append("No changes.")
    return "\n".join(lines) + "\n"


# XML 1.0 cannot carry most control characters, even escaped; provider messages may.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str | None) -> str:
    return _NOT_XML.sub("\ufffd", text or "")


def render_junit(report: Report) -> str:
    """One testsuite per provider, one testcase per deployment × region; a `failure` for
    each certification that is not valid, with the reason."""
    root = ET.Element("testsuites", name="modelcert certifications")
    by_provider: dict[str, list[Entry]] = {}
    for e in report.entries:
        by_provider.setdefault(e.provider, []).append(e)
    for provider, entries in by_provider.items():
        failures = sum(not e.valid for e in entries)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(provider),
            tests=str(len(entries)),
            failures=str(failures),
            errors="0",
            skipped="0",
            timestamp=when_iso(report.generated_at) or "",
        )
        properties = ET.SubElement(suite, "properties")
        simulated = any(e.simulated for e in entries)
        ET.SubElement(properties, "property", name="simulated", value=str(simulated).lower())
        for e in entries:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_xml(e.deployment),
                name=_xml(e.region),
            )
            if not e.valid:
                failure = ET.SubElement(
                    case, "failure", message=_xml(_short(e.reason)), type=e.state
                )
                failure.text = _xml(e.error_message or e.reason)
            details = [f"state {e.state}"]
            if e.rating is not None:
                details.append(f"rating {e.rating} {e.badge}, score {e.score}")
            if e.expires_at:
                details.append(f"expires {when_iso(e.expires_at)}")
            if e.suites:
                details.append(f"suites {', '.join(e.suites)}")
            if e.last_run_cost_usd is not None:
                details.append(f"last run cost ${e.last_run_cost_usd:.6f}")
            if e.simulated:
                details.append("SIMULATION: result of the sim provider, not a real model")
            ET.SubElement(case, "system-out").text = _xml("; ".join(details))
    root.set("tests", str(len(report.entries)))
    root.set("failures", str(sum(not e.valid for e in report.entries)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


RENDERERS = {"json": render_json, "markdown": render_markdown, "junit": render_junit}


def render(report: Report, fmt: str) -> str:
    """The report in `fmt` (json, markdown or junit)."""
    if fmt not in RENDERERS:
        raise UserError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}", field="format")
    return RENDERERS[fmt](report)
