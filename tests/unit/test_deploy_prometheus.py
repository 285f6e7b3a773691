"""deploy/prometheus: the scrape config, the alert rules and their unit tests, checked by
the real `promtool` (Debian package `prometheus`, installed by .ci/run), plus the alert
conventions (severity, for:, annotations, runbook sections that exist)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_deploy_metric_names import DASHBOARDS, dashboard_expressions

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GUIDE = ROOT / "docs" / "worker-guide.md"
# CI sets this so that the promtool checks fail instead of skipping when it is missing.
REQUIRE_PROMTOOL = os.environ.get("MODELCERT_REQUIRE_PROMTOOL") == "1"
# The six conditions issue 4 asks to alert on, and the scrape-health alert they rely on.
REQUIRED_ALERTS = {
    "ModelcertNoLiveWorker",
    "ModelcertBacklogGrowing",
    "ModelcertFailureRateHigh",
    "ModelcertThrottling",
    "ModelcertCertificationsExpiringSoon",
    "ModelcertWorkerHeartbeatStale",
    "ModelcertMetricsTargetDown",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (apt-get install prometheus; .ci/run does it)"
        if REQUIRE_PROMTOOL:
            pytest.fail(f"MODELCERT_REQUIRE_PROMTOOL=1 but {reason}")
        pytest.skip(reason)
    return path


def run(promtool: str, *args: str | Path, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_scrape_config_and_its_rule_file_are_valid(promtool: str) -> None:
    output = run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_the_alert_rules_are_valid(promtool: str) -> None:
    output = run(promtool, "check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in output


def test_the_alert_unit_tests_pass(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts_test.yml")


def test_a_broken_alert_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    # The unit tests can fail: an alert that fires one minute too early breaks them.
    rules = (PROMETHEUS / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(rules.replace("for: 2m", "for: 0m", 1))
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    done = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "ModelcertNoLiveWorker" in done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses PromQL in rule files only: each query becomes a recording rule, with
    # Grafana's variables replaced by what they expand to.
    rules = []
    for path in DASHBOARDS:
        for number, (_, expr) in enumerate(dashboard_expressions(json.loads(path.read_text()))):
            expr = expr.replace("$__rate_interval", "5m").replace("$region", ".*")
            rules.append(
                {"record": f"dashboard:{path.stem.replace('-', '_')}:{number}", "expr": expr}
            )
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    assert f"SUCCESS: {len(rules)} rules found" in run(
        promtool, "check", "rules", tmp_path / "dashboard.yml"
    )


def alert_rules() -> list[dict[str, object]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def guide_anchors() -> set[str]:
    """GitHub-style anchors of the worker guide's headings."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+)$", GUIDE.read_text(), re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(anchor)
    return anchors


def test_each_alert_has_a_severity_a_duration_and_says_what_to_do() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    anchors = guide_anchors()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for"))), f"{name}: no for: duration"
        labels = rule["labels"]
        assert isinstance(labels, dict) and labels["severity"] in ("critical", "warning")
        annotations = rule["annotations"]
        assert isinstance(annotations, dict), name
        assert annotations["summary"] and annotations["description"], name
        runbook = str(annotations["runbook"])
        page, _, anchor = runbook.partition("#")
        assert page == "docs/worker-guide.md", f"{name}: runbook {runbook}"
        assert anchor in anchors, f"{name}: {GUIDE.name} has no section #{anchor}"
        assert runbook in str(annotations["description"]), f"{name}: description omits {runbook}"


def test_the_scrape_config_targets_the_compose_services() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    for job, hosts in targets.items():
        for target in hosts:
            service, _, port = target.partition(":")
            assert service in compose, f"{job}: no compose service {service!r}"
            assert port in {"8000", "3002"}, f"{job}: unexpected port in {target}"
    assert targets["modelcert-workers"] == ["worker-1:3002", "worker-2:3002"]
    assert targets["modelcert-api"] == ["api:8000"]
