"""Every metric the Grafana dashboard and the Prometheus alerts name is one the code exports.

The known names come from the real registries (the workers' `obs.metrics.REGISTRY` and the
API's database collector), so renaming or removing a metric in the code makes this fail
until the dashboard and the alerts follow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcert.api.routes.metrics import exported_names
from modelcert.obs.metrics import REGISTRY

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Series Prometheus itself writes for every target.
PROMETHEUS_SERIES = frozenset({"up"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on"})


def exported_series() -> frozenset[str]:
    """Every series name the code can export, as PromQL would select it."""
    names: set[str] = set(exported_names())
    for family in REGISTRY.collect():
        if family.type == "counter":
            # prometheus_client names the family without `_total`; the series has it.
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("", "_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (function calls and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, is_call = match.groups()
        if not is_call and word not in KEYWORDS:
            names.add(word)
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            # label_values(<series selector>, label): the selector is PromQL.
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            found.append((f"variable {variable['name']!r}", selector[1] if selector else query))
    return found


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [
        (f"alert {rule['alert']}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def all_expressions() -> list[tuple[str, str]]:
    found = alert_expressions()
    for path in DASHBOARDS:
        found.extend(
            (f"{path.name}: {where}", expr)
            for where, expr in dashboard_expressions(json.loads(path.read_text()))
        )
    return found


def unknown_names(expressions: list[tuple[str, str]]) -> list[str]:
    known = exported_series() | PROMETHEUS_SERIES
    return [
        f"{where} names {name!r}"
        for where, expr in expressions
        for name in sorted(metric_names(expr) - known)
    ]


def test_the_registries_yield_the_names_the_code_exports() -> None:
    series = exported_series()
    # One of each kind, from each registry: the suffix handling is what is checked here.
    assert "modelcert_certifications_total" in series  # worker counter
    assert "modelcert_test_latency_seconds_bucket" in series  # worker histogram
    assert "modelcert_worker_heartbeat_age_seconds" in series  # worker gauge
    assert "modelcert_queue_jobs" in series  # worker custom collector
    assert "modelcert_certifications_expiring" in series  # API collector
    assert "modelcert_certifications" not in series  # a counter is never selected bare


def test_the_name_extraction_ignores_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{region=~"$region",x="b c"}'
        "[$__rate_interval]))) / on (region) group_left () b_total offset 1d"
        ' or max without (instance) (c) > bool 2 unless vector(1) and d{state="up"}'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}


def test_there_is_a_dashboard_with_panels_and_every_panel_has_a_query() -> None:
    assert DASHBOARDS, "no dashboard JSON in deploy/grafana/dashboards"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["panels"], path
        for panel in dashboard["panels"]:
            exprs = [t.get("expr") for t in panel.get("targets", [])]
            assert exprs and all(exprs), f"{path.name}: panel {panel['title']!r} has no query"


@pytest.mark.parametrize("source", ["alerts", "dashboards"])
def test_every_metric_named_is_exported_by_the_code(source: str) -> None:
    expressions = alert_expressions() if source == "alerts" else all_expressions()
    for where, expr in expressions:
        assert metric_names(expr), f"{where} selects no metric: {expr}"
    assert unknown_names(expressions) == []


def test_a_metric_the_code_does_not_export_is_reported() -> None:
    # The check itself can fail: a renamed metric and a counter without `_total`.
    broken = [
        ("panel 'old'", 'sum(rate(modelcert_certifications_finished_total{region="x"}[5m]))'),
        ("panel 'bare'", "rate(modelcert_tests[5m])"),
        ("panel 'fine'", "max(modelcert_workers) and up"),
    ]
    assert unknown_names(broken) == [
        "panel 'old' names 'modelcert_certifications_finished_total'",
        "panel 'bare' names 'modelcert_tests'",
    ]
