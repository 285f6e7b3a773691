"""`modelcert catalog add-provider` refuses secrets as a user gives them: one `error:`
line naming the field, exit code 2, nothing stored."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.store.models import Provider

CASES = [
    (
        ["--config", '{"auth": {"api-key": "abc"}}'],
        "error: config.auth.api-key: secrets are not stored; put the value in an environment "
        "variable and give its name as api_key_env",
    ),
    (
        ["--config", '{"headers": {"Authorization": "Bearer abc"}}'],
        "error: config.headers.Authorization: secrets are not stored; put the value in an "
        "environment variable and give its name as Authorization_env",
    ),
    (
        ["--base-url", "https://me:hunter2@gateway.test/v1"],
        "error: base_url: a URL with a password is not stored; remove the user:password@",
    ),
    (
        ["--api-key-env", "sk-proj-abcdefgh123456"],
        "error: --api-key-env: expected the NAME of an environment variable (letters, digits "
        "and _, not starting with a digit)",
    ),
    (
        ["--api-key-env", "sk_live_abcdefgh123456"],
        "error: --api-key-env: looks like a key itself; give the NAME of the variable holding it",
    ),
]


@pytest.mark.parametrize(("args", "expected"), CASES)
def test_add_provider_refuses_secrets_in_one_line(
    engine: Engine,
    factory: sessionmaker[Session],
    database_url: str,
    args: list[str],
    expected: str,
) -> None:
    env = {**os.environ, "MODELCERT_DATABASE_URL": database_url, "NO_COLOR": "1"}
    command = ["catalog", "add-provider", "gw", "--kind", "openai", *args]
    done = subprocess.run(
        [sys.executable, "-m", "modelcert", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (done.returncode, done.stderr, done.stdout) == (2, expected + "\n", "")
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Provider)) == 0
