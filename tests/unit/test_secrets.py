"""modelcert.secrets: masking known secrets and token shapes, the log pipeline, and
refusing secrets in configuration (normalised names, nesting, URL userinfo, *_env)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from modelcert import secrets
from modelcert.errors import UserError
from modelcert.obs.logging import configure_logging, log_event, third_party_levels
from modelcert.providers.base import ProviderError
from modelcert.store.repo import reject_secrets, reject_secrets_in

KNOWN = "unit-known-secret-4Rt9Wq2"


@pytest.fixture(autouse=True)
def known_secret() -> None:
    secrets.register(KNOWN)


def test_registered_values_are_masked_with_their_url_encoded_form() -> None:
    secrets.register("with/slash+plus=Zz81kk")
    text = f"key {KNOWN} and with%2Fslash%2Bplus%3DZz81kk, with/slash+plus=Zz81kk"
    assert secrets.redact(text) == "key *** and ***, ***"


def test_short_values_are_not_registered() -> None:
    secrets.register("short", "", None)
    assert "short" not in secrets.registered()
    assert secrets.redact("a short text") == "a short text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: sk-proj-abcDEF123456.", "Incorrect API key provided: ***."),
        ("Authorization: Bearer eyJhbGciOi.J9x1", "Authorization: Bearer ***"),
        ("AKIAIOSFODNN7EXAMPLE and ASIAIOSFODNN7EXAMPLE", "*** and ***"),
        (
            "?X-Amz-Security-Token=IQoJb3JpZ2lu%2F&X-Amz-Date=2",
            "?X-Amz-Security-Token=***&X-Amz-Date=2",
        ),
        ("'X-Amz-Security-Token': b'IQoJb3JpZ2lu'", "'X-Amz-Security-Token': b'***'"),
        ("Credential=AKIAIOSFODNN7EXAMPLE/2024", "Credential=***/2024"),
        ("Signature=0123456789abcdef0123", "Signature=***"),
        ("key mc_" + "A" * 43, "key ***"),
        ("API key AIzaSyD-1234567890abcdefghijklmnopqrstu not valid", "API key *** not valid"),
        ("token ya29.a0AfH6SMBx-long_token.value", "token ***"),
        ("x-goog-api-key: plainvalue99", "x-goog-api-key: ***"),
        ("postgresql://app:hunter22@db:5432/x", "postgresql://app:***@db:5432/x"),
        ('{"api_key": "abcd1234"}', '{"api_key": "***"}'),
        ("password=letmein1 next", "password=*** next"),
    ],
)
def test_token_shapes_are_masked_even_when_unknown(text: str, expected: str) -> None:
    assert secrets.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Basic authentication required",
        "Bearer realm=api",
        "max_tokens: 1000 exceeds the limit",
        "risk-assessment model not found",
        "The security token included in the request is invalid",
        "https://bedrock.us-east-1.amazonaws.com/model/x/converse",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert secrets.redact(text) == text


def test_provider_errors_are_masked_where_they_are_built() -> None:
    error = ProviderError(f"401: bad key {KNOWN}", status=401)
    assert error.message == "401: bad key ***" and str(error) == "401: bad key ***"
    assert KNOWN not in repr(error)


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    buffer, saved = io.StringIO(), sys.stderr
    sys.stderr = buffer
    try:
        yield buffer
    finally:
        sys.stderr = saved
        configure_logging(json_lines=False, level="WARNING")


def test_every_log_line_is_masked(stderr: io.StringIO) -> None:
    sys.stderr = stderr  # here: pytest sets its own capture again once fixtures are set up
    configure_logging(json_lines=True, level="DEBUG", third_party="botocore=DEBUG")
    logging.getLogger("botocore.endpoint").debug("headers %s", {"X-Amz-Security-Token": KNOWN})
    logging.getLogger("modelcert.api").info("presented %s", KNOWN)
    try:
        raise RuntimeError(f"boom {KNOWN}")
    except RuntimeError:
        logging.getLogger("modelcert.x").exception("failed")
    log_event("error", error=f"internal error: {KNOWN}", nested={"k": [KNOWN]})
    # A handler a library adds after configuration (uvicorn, DBOS) is covered too.
    late = io.StringIO()
    library = logging.getLogger("some.library")
    library.addHandler(logging.StreamHandler(late))
    library.warning("late %s", KNOWN)
    library.handlers.clear()
    output = stderr.getvalue() + late.getvalue()
    assert KNOWN not in output
    assert output.count("***") >= 5


def test_debug_applies_to_modelcert_only(stderr: io.StringIO) -> None:
    configure_logging(json_lines=False, level="DEBUG", third_party="")
    assert logging.getLogger("modelcert.worker").getEffectiveLevel() == logging.DEBUG
    for name in ("botocore", "urllib3", "httpx", "httpcore", "openai", "dbos", "sqlalchemy"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    configure_logging(json_lines=False, level="DEBUG", third_party="httpx=INFO")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.INFO
    # The last call wins: a level raised before goes back to the floor.
    configure_logging(json_lines=False, level="ERROR", third_party="")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("modelcert").getEffectiveLevel() == logging.ERROR


def test_third_party_levels_parse_leniently() -> None:
    assert third_party_levels(" botocore=debug , urllib3=INFO,bad,x=LOUD,modelcert=DEBUG") == {
        "botocore": logging.DEBUG,
        "urllib3": logging.INFO,
    }


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"api_key": "x"}, "config.api_key"),
        ({"api-key": "x"}, "config.api-key"),
        ({"apiKey": "x"}, "config.apiKey"),
        ({"API_KEY": "x"}, "config.API_KEY"),
        ({"x-api-key": "x"}, "config.x-api-key"),
        ({"password": "x"}, "config.password"),
        ({"secret": "x"}, "config.secret"),
        ({"client_secret": "x"}, "config.client_secret"),
        ({"token": "x"}, "config.token"),
        ({"access_token": "x"}, "config.access_token"),
        ({"Authorization": "Bearer x"}, "config.Authorization"),
        ({"aws_secret_access_key": "x"}, "config.aws_secret_access_key"),
        ({"aws_session_token": "x"}, "config.aws_session_token"),
        ({"auth": {"api_key": "x"}}, "config.auth.api_key"),
        ({"headers": {"Authorization": "x"}}, "config.headers.Authorization"),
        ({"headers": [{"name": "x", "apiKey": "y"}]}, "config.headers[0].apiKey"),
        ({"base_url": "https://user:pass@host/v1"}, "config.base_url"),
        ({"endpoints": ["https://u:p@h"]}, "config.endpoints[0]"),
        ({"extra": "sk-proj-abcdefgh12345"}, "config.extra"),
        ({"api_key_env": "sk-abcdefgh12345"}, "config.api_key_env"),
        ({"api_key_env": "sk_live_abcdefgh12345"}, "config.api_key_env"),
        ({"api_key_env": "Zx81QwLm2Zt8Rk4VnP0aBcDeQw1Lm2Zt8"}, "config.api_key_env"),
        ({"api_key_env": "abcdef0123456789abcdef0123456789"}, "config.api_key_env"),
        ({"api_key_env": "MY KEY"}, "config.api_key_env"),
        ({"api_key_env": "1KEY"}, "config.api_key_env"),
        ({"api_key_env": ""}, "config.api_key_env"),
        ({"api_key_env": 3}, "config.api_key_env"),
        ({"token-env": "a=b"}, "config.token-env"),
        ({"note": KNOWN}, "config.note"),
    ],
)
def test_secrets_in_configuration_are_refused_naming_the_field(
    config: dict[str, object], field: str
) -> None:
    with pytest.raises(UserError) as raised:
        reject_secrets(config, "config")
    assert raised.value.field == field
    assert raised.value.message.startswith(field + ":")
    assert "\n" not in raised.value.message


@pytest.mark.parametrize(
    "config",
    [
        {"api_key_env": "MY_LLM_KEY", "timeout": 60, "organization": "org-1"},
        {"api_key_env": "AzureOpenAIKey2024Production"},
        {"azure_endpoint": "https://res.openai.azure.com", "api_version": "2024-10-21"},
        {"profile_name": "dev", "endpoint_url": "http://127.0.0.1:9000", "read_timeout": 5},
        {"seed": 3, "profile": "flaky", "quota_key": "shared", "throttle_scope": "provider"},
        {"max_tokens": 100, "tokenizer": "llama", "auth_type": "none", "key_id": "k1"},
        {"headers": {"X-Team": "certification"}, "base_url": "http://user@host/v1"},
        {"api_key": None},
    ],
)
def test_ordinary_configuration_is_accepted(config: dict[str, object]) -> None:
    reject_secrets(config, "config")


def test_an_option_value_is_checked_too() -> None:
    with pytest.raises(UserError) as raised:
        reject_secrets_in("base_url", "http://admin:pw@127.0.0.1:8080/v1")
    assert raised.value.field == "base_url"
    reject_secrets_in("base_url", "http://127.0.0.1:8080/v1")
