from __future__ import annotations

import pytest

from modelcert.settings import Settings


def test_old_variable_names_keep_their_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFICATION_CONCURRENCY", "7")
    monkeypatch.setenv("CERTIFICATION_TIMEOUT", "120000")
    monkeypatch.setenv("CERTIFICATION_MAX_RETRIES", "5")
    monkeypatch.setenv("CERTIFICATION_QUEUE_NAME", "q")
    monkeypatch.setenv("WORKER_HEALTH_PORT", "4000")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.certification_concurrency == 7
    assert settings.certification_timeout_ms == 120_000
    assert settings.certification_timeout_s == 120.0
    assert settings.certification_max_retries == 5
    assert settings.certification_queue_name == "q"
    assert settings.worker_health_port == 4000


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELCERT_DATABASE_URL", "CERTIFICATION_CONCURRENCY", "CERTIFICATION_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite:///modelcert.db"
    assert settings.certification_timeout_ms == 300_000
    assert settings.certification_max_retries == 3
    assert settings.worker_health_port == 3002
    assert settings.is_sqlite


def test_dotenv_file_is_read(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELCERT_DATABASE_URL", raising=False)
    monkeypatch.chdir(str(tmp_path))
    (tmp_path / ".env").write_text("MODELCERT_DATABASE_URL=sqlite:///other.db\n")  # type: ignore[operator]
    assert Settings().database_url == "sqlite:///other.db"


def test_invalid_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFICATION_CONCURRENCY", "0")
    with pytest.raises(ValueError, match=r"certification_concurrency|CERTIFICATION_CONCURRENCY"):
        Settings(_env_file=None)  # type: ignore[call-arg]
