"""The anthropic kind end to end: deployments certified through the durable workflow (the
enqueuer the API uses, an in-process worker), over the real anthropic SDK, against a local
server speaking Anthropic's wire format; on SQLite and PostgreSQL. A healthy model is
CERTIFIED; each misbehaviour gives the verdict and category a user would expect, with
Anthropic's own message kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.catalog.sync import sync_region
from modelcert.certify.battery import default_capabilities
from modelcert.errors import UserError
from modelcert.jobs.enqueue import Enqueuer
from modelcert.store import repo
from modelcert.store.db import transaction
from tests.support.fake_anthropic import (
    Behaviour,
    FakeAnthropic,
    HttpError,
    StreamError,
    model_info,
)
from tests.support.inprocess import StartWorker
from tests.support.queued import assert_verdicts, certify_queued

KEY_VARIABLE = "MODELCERT_TEST_ANTHROPIC_KEY"

# model id -> (behaviour, expected status, expected category, the message kept, retried)
CASES: dict[str, tuple[Behaviour, str, str | None, str | None, bool]] = {
    "claude-healthy": (Behaviour(), "CERTIFIED", None, None, False),
    "claude-throttled-then-ok": (
        Behaviour(error=HttpError("rate_limit_error", "slow down", retry_after="0"), error_times=2),
        "CERTIFIED",
        None,
        None,
        True,
    ),
    "claude-rate-limited": (
        Behaviour(error=HttpError("rate_limit_error", "Number of request tokens exceeded")),
        "FAILED",
        "RATE_LIMIT",
        "Number of request tokens exceeded",
        True,
    ),
    "claude-overloaded": (
        Behaviour(error=HttpError("overloaded_error", "Overloaded")),
        "FAILED",
        "SERVER_ERROR",
        "Overloaded",
        True,
    ),
    "claude-api-error": (
        Behaviour(error=HttpError("api_error", "Internal server error")),
        "FAILED",
        "SERVER_ERROR",
        "Internal server error",
        True,
    ),
    "claude-bad-key": (
        Behaviour(error=HttpError("authentication_error", "invalid x-api-key")),
        "FAILED",
        "AUTHENTICATION_ERROR",
        "invalid x-api-key",
        False,
    ),
    "claude-denied": (
        Behaviour(error=HttpError("permission_error", "This key may not use this model")),
        "FAILED",
        "PERMISSION_ERROR",
        "This key may not use this model",
        False,
    ),
    "claude-retired": (
        Behaviour(error=HttpError("not_found_error", "model: claude-retired")),
        "FAILED",
        "UNAVAILABLE",
        "model: claude-retired",
        False,
    ),
    "claude-misconfigured": (
        Behaviour(error=HttpError("invalid_request_error", "max_tokens: too large for model")),
        "FAILED",
        "CONFIGURATION_ERROR",
        "max_tokens: too large for model",
        False,
    ),
    "claude-mid-stream": (
        Behaviour(stream_error=StreamError("overloaded_error", "Overloaded mid-answer")),
        "FAILED",
        "SERVER_ERROR",
        "Overloaded mid-answer",
        True,
    ),
    "claude-cut": (Behaviour(cut_after_chunks=1), "FAILED", "NETWORK_ERROR", None, True),
    "claude-hang": (Behaviour(hold=True), "FAILED", "TIMEOUT", None, False),
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    monkeypatch.setenv(KEY_VARIABLE, "planted-anthropic-key-Hq73Lx9")
    with FakeAnthropic() as server:
        for model_id, (behaviour, *_) in CASES.items():
            server.behaviours[model_id] = behaviour
        yield server


@pytest.fixture
def catalog(factory: sessionmaker[Session], fake: FakeAnthropic) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="anthropic",
            kind="anthropic",
            base_url=fake.url,
            # Test budgets short enough that a hang costs two seconds, long enough for
            # every other call on a loaded machine.
            config={"api_key_env": KEY_VARIABLE, "timeout": 20},
        )
        for model_id in CASES:
            repo.add_deployment(
                session,
                provider_slug="anthropic",
                provider_model_id=model_id,
                vendor="Anthropic",
                capabilities=default_capabilities("anthropic"),
                options={"test_timeout_s": 1.0} if model_id == "claude-hang" else {},
            )
    return factory


def test_each_behaviour_gets_the_verdict_a_user_expects(
    catalog: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    fake: FakeAnthropic,
) -> None:
    pairs = [(f"anthropic/{model_id}", "global") for model_id in CASES]
    found = certify_queued(catalog, enqueuer, start_worker, pairs)
    verdicts = {ref.split("/")[1]: verdict for (ref, _), verdict in found.items()}
    assert_verdicts(verdicts, {model_id: expected for model_id, (_, *expected) in CASES.items()})
    assert fake.request_counts["claude-hang"] >= 1

    # A healthy model passes every test, optional features and the vendor's extra included.
    outcomes = {t.test_id: t.outcome for t in verdicts["claude-healthy"].tests}
    assert set(outcomes.values()) == {"PASSED"}, outcomes
    assert {"tool-calling", "json-output", "stop-sequence", "anthropic-sampling"} <= set(outcomes)

    # Failures keep Anthropic's error type and HTTP status (none for an event mid-stream).
    first = verdicts["claude-overloaded"].tests[0]
    assert (first.error_code, first.http_status) == ("overloaded_error", 529)
    mid = verdicts["claude-mid-stream"].tests[0]
    assert (mid.error_code, mid.http_status) == ("overloaded_error", None)
    # An unusable deployment is not paid for further; a hung one gets two test budgets.
    denied = verdicts["claude-denied"].tests
    assert [t.outcome for t in denied[1:]] == ["SKIPPED"] * (len(denied) - 1)
    hang = verdicts["claude-hang"].tests
    assert [t.outcome for t in hang[:2]] == ["FAILED", "FAILED"]
    assert all(t.outcome == "SKIPPED" for t in hang[2:])

    # A throttled model was refused and retried on its own quota; the healthy one, on its
    # own quota too, was never refused. (Not `throttled_s == 0`: the gate's bookkeeping
    # between the healthy model's own calls is a few ms under load, as CI found.)
    throttled = verdicts["claude-throttled-then-ok"].tests[0]
    assert (throttled.retries, throttled.rate_limited, throttled.outcome) == (2, 2, "PASSED")
    assert all(t.rate_limited == 0 and t.retries == 0 for t in verdicts["claude-healthy"].tests)


async def test_sync_adds_the_models_the_key_may_use(
    catalog: sessionmaker[Session], fake: FakeAnthropic
) -> None:
    fake.models = [model_info("claude-healthy"), model_info("claude-opus-9", "Claude Opus 9")]
    added, skipped = await sync_region(catalog, "anthropic", "global", False, kind="anthropic")
    assert added == ["claude-opus-9 (Anthropic, ON_DEMAND)"]
    assert skipped == ["claude-healthy (already in the catalog)"]
    with catalog() as session:
        opus = repo.find_deployment(session, "anthropic/claude-opus-9")
        assert (opus.model.name, opus.model.vendor) == ("Claude Opus 9", "Anthropic")
        caps = opus.model.capabilities
        assert caps["tools"] and caps["json_output"] and caps["vision"]
    fake.list_error = HttpError("authentication_error", "invalid x-api-key")
    with pytest.raises(UserError) as refused:
        await sync_region(catalog, "anthropic", "global", False, kind="anthropic")
    assert refused.value.message == (
        "anthropic: discovery in global failed: AUTHENTICATION_ERROR "
        "(authentication_error, HTTP 401): invalid x-api-key"
    )
