"""A whole certification of a real model server: llama.cpp with SmolLM2-135M.

A 135M model is not expected to pass the instruction-following tests; what must hold is
what the transport guarantees: the run completes and is recorded with latency and TTFT,
and a wrong key is an AUTHENTICATION_ERROR that fails the deployment."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import Capabilities, CertificationStatus, ErrorCategory, TestOutcome
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, TestResultRow
from tests.support.inprocess import certify_here
from tests.support.llama_server import LlamaServer

# A busy 2-core machine can make the 135M model slow: bound each test, generously.
pytestmark = [pytest.mark.llama, pytest.mark.timeout(900)]


def _catalog(factory: sessionmaker[Session], llama: LlamaServer, key_env: str) -> None:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="llama",
            kind="openai",
            base_url=llama.base_url,
            config={"api_key_env": key_env, "timeout": 60},
        )
        repo.add_deployment(
            session,
            provider_slug="llama",
            provider_model_id="smollm2",
            model_name="SmolLM2-135M-Instruct",
            vendor="HuggingFace",
            capabilities=Capabilities(tools=True, json_output=True),
            # Generous per-call timeout, few retries: a slow (busy) machine stays bounded.
            options={"test_timeout_s": 60, "max_retries": 1},
        )


async def test_certifies_the_real_server_with_latency_and_ttft(
    factory: sessionmaker[Session],
    settings: Settings,
    llama: LlamaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMA_TEST_KEY", llama.api_key)
    _catalog(factory, llama, "LLAMA_TEST_KEY")
    report = await certify_here(settings, "llama/smollm2", "global")

    assert not report.simulated
    by_id = {r.test_id: r for r in report.results}
    # Transport guarantees, whatever a tiny model answers:
    assert by_id["basic-prompt"].outcome is TestOutcome.PASSED
    assert by_id["streaming"].outcome is TestOutcome.PASSED
    assert by_id["token-usage"].outcome is TestOutcome.PASSED
    # Measured, whatever its value (the 10 s verdict depends on how busy the machine is).
    assert by_id["time-to-first-token"].ttft_ms is not None
    assert all(r.error_category is not ErrorCategory.AUTHENTICATION_ERROR for r in report.results)
    assert report.score.status.is_final

    with factory() as session:
        rows = session.scalars(
            select(TestResultRow).where(TestResultRow.run_id == report.run_id)
        ).all()
        streamed = next(r for r in rows if r.test_id == "streaming")
        assert streamed.latency_ms and streamed.latency_ms > 0
        assert streamed.ttft_ms and 0 < streamed.ttft_ms <= streamed.latency_ms
        cert = session.scalars(select(Certification)).one()
        assert cert.last_run_id == report.run_id and cert.status == report.score.status.value
        assert cert.avg_latency_ms and not cert.simulated


async def test_a_wrong_key_fails_the_deployment_as_authentication_error(
    factory: sessionmaker[Session],
    settings: Settings,
    llama: LlamaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMA_WRONG_KEY", "sk-wrong")
    _catalog(factory, llama, "LLAMA_WRONG_KEY")
    report = await certify_here(settings, "llama/smollm2", "global")
    assert report.score.status is CertificationStatus.FAILED
    assert report.score.error_category is ErrorCategory.AUTHENTICATION_ERROR
    assert "Invalid API Key" in (report.score.error_message or "")
    assert report.results[0].http_status == 401
