"""The gemini kind end to end, for the Gemini API and for Vertex AI: deployments certified
through the durable workflow (the enqueuer the API uses, an in-process worker), over the
real google-genai SDK, against a local server speaking their wire format; on SQLite and
PostgreSQL. A healthy model is CERTIFIED, each misbehaviour gets the verdict and category
a user would expect, and a Vertex provider is certified per location, each location's
quota its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.catalog.sync import sync_region
from modelcert.certify.battery import default_capabilities
from modelcert.certify.plan import quota_key
from modelcert.errors import UserError
from modelcert.jobs.enqueue import Enqueuer
from modelcert.store import repo
from modelcert.store.db import transaction
from tests.support.fake_gemini import Behaviour, FakeGemini, HttpError, vertex_model
from tests.support.inprocess import StartWorker
from tests.support.queued import assert_verdicts, certify_queued

KEY_VARIABLE = "MODELCERT_TEST_GEMINI_KEY"
TOKEN_VARIABLE = "MODELCERT_TEST_VERTEX_TOKEN"
LOCATIONS = ("us-central1", "europe-west4", "asia-northeast1")
PRO = "gemini-2.5-pro"
PREVIEW = "gemini-3-preview"  # offered in two of the three locations

# model id -> (behaviour, expected status, expected category, the message kept, retried)
CASES: dict[str, tuple[Behaviour, str, str | None, str | None, bool]] = {
    "gemini-healthy": (Behaviour(), "CERTIFIED", None, None, False),
    "gemini-throttled-then-ok": (
        Behaviour(error=HttpError("RESOURCE_EXHAUSTED", "quota", retry_delay="0s"), error_times=2),
        "CERTIFIED",
        None,
        None,
        True,
    ),
    "gemini-exhausted": (
        Behaviour(error=HttpError("RESOURCE_EXHAUSTED", "Resource has been exhausted")),
        "FAILED",
        "RATE_LIMIT",
        "Resource has been exhausted",
        True,
    ),
    "gemini-denied": (
        Behaviour(error=HttpError("PERMISSION_DENIED", "Permission denied on resource project")),
        "FAILED",
        "PERMISSION_ERROR",
        "Permission denied on resource project",
        False,
    ),
    "gemini-missing": (
        Behaviour(error=HttpError("NOT_FOUND", "models/gemini-missing is not found")),
        "FAILED",
        "UNAVAILABLE",
        "models/gemini-missing is not found",
        False,
    ),
    "gemini-invalid": (
        Behaviour(error=HttpError("INVALID_ARGUMENT", "Invalid value at 'contents'")),
        "FAILED",
        "CONFIGURATION_ERROR",
        "Invalid value at 'contents'",
        False,
    ),
    "gemini-bad-key": (
        Behaviour(
            error=HttpError(
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                reason="API_KEY_INVALID",
            )
        ),
        "FAILED",
        "AUTHENTICATION_ERROR",
        "API key not valid. Please pass a valid API key.",
        False,
    ),
    "gemini-unauthenticated": (
        Behaviour(error=HttpError("UNAUTHENTICATED", "Request had invalid credentials.")),
        "FAILED",
        "AUTHENTICATION_ERROR",
        "Request had invalid credentials.",
        False,
    ),
    "gemini-unavailable": (
        Behaviour(error=HttpError("UNAVAILABLE", "The model is overloaded.")),
        "FAILED",
        "SERVER_ERROR",
        "The model is overloaded.",
        True,
    ),
    "gemini-deadline": (
        Behaviour(error=HttpError("DEADLINE_EXCEEDED", "Deadline expired before operation")),
        "FAILED",
        "TIMEOUT",
        "Deadline expired before operation",
        True,
    ),
    "gemini-mid-stream": (
        Behaviour(stream_error=HttpError("UNAVAILABLE", "overloaded mid-answer")),
        "FAILED",
        "SERVER_ERROR",
        "overloaded mid-answer",
        True,
    ),
    "gemini-cut": (Behaviour(cut_after_chunks=1), "FAILED", "NETWORK_ERROR", None, True),
    "gemini-hang": (Behaviour(hold=True), "FAILED", "TIMEOUT", None, False),
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.setenv(KEY_VARIABLE, "planted-gemini-key-Wm41Qz8")
    monkeypatch.setenv(TOKEN_VARIABLE, "planted-vertex-token-Rk29Ps7")
    with FakeGemini() as server:
        yield server


def add_deployments(
    session: Session, provider: str, model_ids: list[str], hang: str | None = None
) -> None:
    for model_id in model_ids:
        repo.add_deployment(
            session,
            provider_slug=provider,
            provider_model_id=model_id,
            vendor="Google",
            capabilities=default_capabilities("gemini"),
            # A hang costs two budgets of a second.
            options={"test_timeout_s": 1.0} if model_id == hang else {},
        )


def test_gemini_api_behaviours_get_the_verdict_a_user_expects(
    factory: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    fake: FakeGemini,
) -> None:
    for model_id, (behaviour, *_) in CASES.items():
        fake.behaviours[model_id] = behaviour
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="gemini",
            kind="gemini",
            base_url=fake.url,
            config={"api_key_env": KEY_VARIABLE, "timeout": 20},
        )
        add_deployments(session, "gemini", list(CASES), hang="gemini-hang")
    pairs = [(f"gemini/{model_id}", "global") for model_id in CASES]
    found = certify_queued(factory, enqueuer, start_worker, pairs)
    verdicts = {ref.split("/")[1]: verdict for (ref, _), verdict in found.items()}
    assert_verdicts(verdicts, {model_id: expected for model_id, (_, *expected) in CASES.items()})

    # A healthy model passes every test, optional features and Google's extra included.
    outcomes = {t.test_id: t.outcome for t in verdicts["gemini-healthy"].tests}
    assert set(outcomes.values()) == {"PASSED"}, outcomes
    assert {"tool-calling", "json-output", "stop-sequence", "google-max-tokens"} <= set(outcomes)
    # Google's canonical status is the code kept, with the HTTP status.
    exhausted = verdicts["gemini-exhausted"].tests[0]
    assert (exhausted.error_code, exhausted.http_status) == ("RESOURCE_EXHAUSTED", 429)
    assert verdicts["gemini-bad-key"].tests[0].error_code == "API_KEY_INVALID"
    throttled = verdicts["gemini-throttled-then-ok"].tests[0]
    assert (throttled.retries, throttled.outcome) == (2, "PASSED")
    hang = verdicts["gemini-hang"].tests
    assert [t.outcome for t in hang[:2]] == ["FAILED", "FAILED"]
    assert all(t.outcome == "SKIPPED" for t in hang[2:])


def test_a_vertex_provider_is_certified_per_location_each_with_its_own_quota(
    factory: sessionmaker[Session],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    fake: FakeGemini,
) -> None:
    # us-central1's quota for the model runs dry: its first calls are refused with a
    # RetryInfo delay. The same model's quota in the other locations is untouched.
    fake.location_behaviours[("us-central1", PRO)] = Behaviour(
        error=HttpError("RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="0.4s"),
        error_times=3,
    )
    fake.location_behaviours[("asia-northeast1", PREVIEW)] = Behaviour(
        error=HttpError("NOT_FOUND", f"Publisher Model {PREVIEW} was not found")
    )
    with transaction(factory) as session:
        provider = repo.add_provider(
            session,
            slug="vertex",
            kind="gemini",
            base_url=fake.url,
            regions=LOCATIONS,
            config={
                "vertexai": True,
                "project": "cert-project",
                "access_token_env": TOKEN_VARIABLE,
                "timeout": 20,
            },
        )
        assert provider.auth_type == "google_adc"
        add_deployments(session, "vertex", [PRO, PREVIEW])
    pairs = [(f"vertex/{model}", location) for model in (PRO, PREVIEW) for location in LOCATIONS]
    verdicts = certify_queued(factory, enqueuer, start_worker, pairs)

    # Every location was called at its own endpoint, for both models.
    seen = {(call.location, call.model_id) for call in fake.calls_seen}
    assert seen == {(location, model) for location in LOCATIONS for model in (PRO, PREVIEW)}
    for location in LOCATIONS:
        assert verdicts[(f"vertex/{PRO}", location)].status == "CERTIFIED", location
    # Availability is per location too.
    assert verdicts[(f"vertex/{PREVIEW}", "asia-northeast1")].error_category == "UNAVAILABLE"
    assert verdicts[(f"vertex/{PREVIEW}", "us-central1")].status == "CERTIFIED"

    # The throttled location waited out its quota's RetryInfo (0.4 s, three times)...
    central = verdicts[(f"vertex/{PRO}", "us-central1")]
    assert central.total_retries >= 3
    assert sum(t.throttled_s for t in central.tests) >= 3 * 0.4
    # ... and the others were never refused: each location's quota is its own. (Not a bound
    # on their `throttled_s`: the gate's bookkeeping between their own calls grows with
    # the machine's load.)
    assert sum(t.rate_limited for t in central.tests) >= 3
    for location in ("europe-west4", "asia-northeast1"):
        other = verdicts[(f"vertex/{PRO}", location)]
        assert other.total_retries == 0, location
        assert all(t.rate_limited == 0 for t in other.tests), (location, other.tests)
    with factory() as session:
        spec = repo.deployment_spec(repo.find_deployment(session, f"vertex/{PRO}"))
    keys = {quota_key(spec, location) for location in LOCATIONS}
    assert {str(key) for key in keys} == {f"vertex/{location}/{PRO}" for location in LOCATIONS}


async def test_sync_adds_the_gemini_models_a_vertex_location_lists(
    factory: sessionmaker[Session], fake: FakeGemini
) -> None:
    fake.models = [vertex_model(PRO), vertex_model("imagen-4.0-generate")]
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="vertex",
            kind="gemini",
            base_url=fake.url,
            regions=LOCATIONS,
            config={"vertexai": True, "project": "p", "access_token_env": TOKEN_VARIABLE},
        )
    added, skipped = await sync_region(factory, "vertex", "europe-west4", False, kind="gemini")
    assert (added, skipped) == ([f"{PRO} (Google, ON_DEMAND)"], [])
    with factory() as session:
        caps = repo.find_deployment(session, f"vertex/{PRO}").model.capabilities
        assert caps["tools"] and caps["json_output"] and caps["streaming"]
    with pytest.raises(UserError, match="not served by provider 'vertex'"):
        await sync_region(factory, "vertex", "us-east4", False, kind="gemini")
