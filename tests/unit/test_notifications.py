"""The notifications' pure decisions: what counts as a verdict change, the signature a
receiver verifies, the backoff, the masked URL, the Slack line, a subscription's
checks (each naming its field)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from modelcert.errors import UserError
from modelcert.jobs.notify import Answer, backoff_s, sign, slack_text
from modelcert.jobs.notify_events import verdict_changed
from modelcert.settings import Settings
from modelcert.store.notifications import NewSubscription, check_subscription, masked_url


@pytest.mark.parametrize(
    ("previous", "current", "changed"),
    [
        ("CERTIFIED", "FAILED", True),
        ("QUALITY_WARNING", "FAILED", True),
        ("FAILED", "CERTIFIED", True),
        ("FAILED", "QUALITY_WARNING", True),
        ("CERTIFIED", "QUALITY_WARNING", False),
        ("FAILED", "FAILED", False),
        (None, "FAILED", False),  # a first verdict is no change
        ("CERTIFIED", "INCOMPLETE", False),  # no verdict on the model
        ("CERTIFIED", "ERROR", False),
    ],
)
def test_a_verdict_change_is_valid_to_failed_or_back(
    previous: str | None, current: str, changed: bool
) -> None:
    assert verdict_changed(previous, current) is changed


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"job.finished:1"}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k" * 16, "1700000000", body) == f"sha256={expected}"
    assert sign("k" * 16, "1700000001", body) != sign("k" * 16, "1700000000", body)


def test_the_backoff_doubles_from_its_base_up_to_an_hour() -> None:
    settings = Settings(notify_retry_base_s=2)
    assert [backoff_s(settings, n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_s(settings, 30) == 3600


@pytest.mark.parametrize(
    ("code", "retry"), [(None, True), (500, True), (503, True), (429, True), (408, True),
                        (400, False), (404, False), (410, False)]
)  # fmt: skip
def test_network_errors_5xx_429_and_408_are_retried_other_4xx_not(
    code: int | None, retry: bool
) -> None:
    assert Answer(code, None).retry is retry


def test_a_masked_url_keeps_scheme_host_and_port_only() -> None:
    assert masked_url("https://hooks.slack.com/services/T/B/xoxb") == "https://hooks.slack.com/***"
    assert masked_url("http://user:pw@10.0.0.5:8080/h?token=t") == "http://10.0.0.5:8080/***"


def test_slack_gets_one_readable_line_per_kind() -> None:
    changed = {
        "kind": "verdict.changed",
        "data": {"deployment": "lab/q", "region": "us-east-1", "from": "CERTIFIED", "to": "FAILED"},
    }
    assert slack_text(changed) == "modelcert: lab/q in us-east-1 went from CERTIFIED to FAILED"


def subscription(**changes: object) -> NewSubscription:
    values: dict[str, object] = {
        "name": "n",
        "events": ["job.finished"],
        "target_kind": "webhook",
        "target_url": "https://example.com/hook",
        "secret": "s" * 16,
        **changes,
    }
    return NewSubscription(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"events": ["job.done"]}, "events"),
        ({"target_url": "file:///etc/passwd"}, "targetUrl"),
        ({"secret": None}, "secret"),
        ({"target_kind": "slack"}, "secret"),
        ({"target_kind": "email"}, "targetKind"),
        ({"name": " "}, "name"),
        ({"degraded_factor": 1.0}, "degradedFactor"),
    ],
)
def test_a_bad_subscription_names_its_field_and_not_the_secret(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(UserError) as caught:
        check_subscription(subscription(**changes))
    assert caught.value.field == field
    assert "s" * 16 not in caught.value.message


def test_a_good_subscription_passes() -> None:
    assert check_subscription(subscription(target_kind="slack", secret=None)).secret is None
