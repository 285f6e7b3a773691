"""Bedrock end to end: discovery into the catalog and certifications through boto3,
against a local server speaking Bedrock's wire format."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from modelcert.catalog.sync import sync_bedrock_region
from modelcert.certify.engine import CertificationOutcome
from modelcert.domain import CertificationStatus, ErrorCategory, TestOutcome
from modelcert.errors import UserError
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.db import transaction
from tests.support.fake_bedrock import (
    Behaviour,
    FakeBedrock,
    HttpError,
    StreamException,
    model_summary,
)
from tests.support.inprocess import certify_here

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
TITAN = "amazon.titan-text-premier-v1:0"
LLAMA = "meta.llama3-2-90b-instruct-v1:0"


@pytest.fixture
def fake(aws_test_env: None) -> Iterator[FakeBedrock]:
    with FakeBedrock() as server:
        server.models = [
            model_summary(CLAUDE, provider="Anthropic"),
            model_summary(TITAN, provider="Amazon"),
            model_summary(LLAMA, provider="Meta", inference_types=("INFERENCE_PROFILE",)),
        ]
        server.availability[TITAN] = HttpError("AccessDeniedException", "not entitled")
        yield server


@pytest.fixture
def bedrock_catalog(factory: sessionmaker[Session], fake: FakeBedrock) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="bedrock",
            kind="bedrock",
            config={"endpoint_url": fake.url, "read_timeout": 5, "retry_base_ms": 10},
        )
    return factory


async def test_sync_adds_entitled_text_models(bedrock_catalog: sessionmaker[Session]) -> None:
    added, skipped = await sync_bedrock_region(bedrock_catalog, "bedrock", "us-east-1", False)
    assert len(added) == 2 and any(TITAN in s and "not entitled" in s for s in skipped)
    with bedrock_catalog() as session:
        llama = repo.find_deployment(session, f"bedrock/{LLAMA}")
        assert llama.inference_type == "INFERENCE_PROFILE" and llama.model.vendor == "Meta"
        claude = repo.find_deployment(session, f"bedrock/{CLAUDE}")
        # What discovery can know of a known family: the full battery runs for it.
        assert claude.model.capabilities["tools"] and claude.model.capabilities["json_output"]
        assert claude.model.capabilities["system_prompt"] and claude.model.capabilities["streaming"]
    again, _ = await sync_bedrock_region(bedrock_catalog, "bedrock", "us-east-1", False)
    assert again == []  # idempotent


async def _certify(
    factory: sessionmaker[Session], settings: Settings, model_id: str, region: str = "us-east-1"
) -> CertificationOutcome:
    return await certify_here(settings, f"bedrock/{model_id}", region)


async def test_healthy_model_certifies_through_boto3(
    bedrock_catalog: sessionmaker[Session], settings: Settings, fake: FakeBedrock
) -> None:
    await sync_bedrock_region(bedrock_catalog, "bedrock", "us-east-1", False)
    fake.behaviours[LLAMA] = Behaviour(text="Your name is Alice, and hello Quill fans.")
    report = await _certify(bedrock_catalog, settings, LLAMA, "eu-west-1")
    by_id = {r.test_id: r for r in report.results}
    assert by_id["basic-prompt"].outcome is TestOutcome.PASSED
    assert by_id["streaming"].ttft_ms is not None
    assert by_id["token-usage"].outcome is TestOutcome.PASSED
    assert not report.simulated
    # An inference-profile deployment in eu-west-1 is called with the eu. prefix.
    assert fake.last_request(f"eu.{LLAMA}").model_id == f"eu.{LLAMA}"


@pytest.mark.parametrize(
    ("error", "category", "retried"),
    [
        (
            HttpError("AccessDeniedException", "You don't have access to the model."),
            ErrorCategory.PERMISSION_ERROR,
            False,
        ),
        (
            HttpError("ResourceNotFoundException", "Model not found."),
            ErrorCategory.UNAVAILABLE,
            False,
        ),
        (
            HttpError(
                "ValidationException",
                "Invocation of model ID x with on-demand throughput isn't supported.",
            ),
            ErrorCategory.CONFIGURATION_ERROR,
            False,
        ),
        (
            HttpError("ThrottlingException", "Too many requests.", retry_after="0"),
            ErrorCategory.RATE_LIMIT,
            True,
        ),
    ],
)
async def test_provider_errors_are_classified_with_their_message(
    bedrock_catalog: sessionmaker[Session],
    settings: Settings,
    fake: FakeBedrock,
    error: HttpError,
    category: ErrorCategory,
    retried: bool,
) -> None:
    await sync_bedrock_region(bedrock_catalog, "bedrock", "us-east-1", False)
    fake.behaviours[CLAUDE] = Behaviour(error=error)
    report = await _certify(bedrock_catalog, settings, CLAUDE)
    score = report.score
    assert score.status is CertificationStatus.FAILED
    assert score.error_category is category
    assert score.error_message == error.message
    first = report.results[0]
    assert first.error_code == error.code and first.http_status == error.http_status
    assert (first.retries > 0) is retried


async def test_an_exception_frame_mid_stream_is_classified(
    bedrock_catalog: sessionmaker[Session], settings: Settings, fake: FakeBedrock
) -> None:
    await sync_bedrock_region(bedrock_catalog, "bedrock", "us-east-1", False)
    fake.behaviours[CLAUDE] = Behaviour(
        stream_exception=StreamException("modelStreamErrorException", "model stream broke")
    )
    report = await _certify(bedrock_catalog, settings, CLAUDE)
    first = report.results[0]
    # The stream was opened and Bedrock itself reported the failure: a server-side fault.
    assert first.error_category is ErrorCategory.SERVER_ERROR
    assert first.error_code is not None and "modelstreamerror" in first.error_code.lower()
    assert first.error_message == "model stream broke"
    assert first.retries == settings.certification_max_retries


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            HttpError("UnrecognizedClientException", "The security token is invalid"),
            "bedrock: discovery in us-east-1 failed: AUTHENTICATION_ERROR "
            "(UnrecognizedClientException, HTTP 403): The security token is invalid",
        ),
        (
            HttpError("AccessDeniedException", "not authorized to perform ListFoundationModels"),
            "bedrock: discovery in us-east-1 failed: PERMISSION_ERROR "
            "(AccessDeniedException, HTTP 403): not authorized to perform ListFoundationModels",
        ),
    ],
)
async def test_sync_refused_by_bedrock_is_one_classified_line(
    bedrock_catalog: sessionmaker[Session], fake: FakeBedrock, answer: HttpError, expected: str
) -> None:
    fake.list_error = answer
    with pytest.raises(UserError) as raised:
        await sync_bedrock_region(bedrock_catalog, "bedrock", "us-east-1", False)
    assert raised.value.message == expected


async def test_sync_with_an_unreachable_endpoint_is_one_classified_line(
    factory: sessionmaker[Session], aws_test_env: None
) -> None:
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="bedrock", kind="bedrock", config={"endpoint_url": "http://127.0.0.1:1"}
        )
    with pytest.raises(UserError) as raised:
        await sync_bedrock_region(factory, "bedrock", "us-east-1", False)
    message = raised.value.message
    assert message.startswith("bedrock: discovery in us-east-1 failed: NETWORK_ERROR (")
    assert "\n" not in message


def test_cli_sync_with_bad_credentials_is_one_error_line_exit_2(
    bedrock_catalog: sessionmaker[Session], fake: FakeBedrock, database_url: str
) -> None:
    fake.list_error = HttpError(
        "UnrecognizedClientException",
        "The security token included in the request is invalid",
        echo_headers=("X-Amz-Security-Token",),
    )
    env = {
        **os.environ,
        "MODELCERT_DATABASE_URL": database_url,
        "AWS_SESSION_TOKEN": "planted-session-token-for-sync-Zq81",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "modelcert", "catalog", "sync", "bedrock", "--region", "us-east-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "error: bedrock: discovery in us-east-1 failed: AUTHENTICATION_ERROR "
        "(UnrecognizedClientException, HTTP 403): The security token included in the request "
        "is invalid; X-Amz-Security-Token: ***\n"
    )
    assert done.stdout == ""
