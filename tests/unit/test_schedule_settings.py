"""The re-certification settings: a cron (with an optional seconds field) or `off`."""

from __future__ import annotations

import pytest

from modelcert.settings import Settings


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in (
        "MODELCERT_RECERTIFY_SCHEDULE",
        "MODELCERT_RECERTIFY_WINDOW_H",
        "MODELCERT_RECERTIFY_FAILED_AFTER_H",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_defaults_every_ten_minutes_a_day_ahead_and_six_hours_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch)
    assert settings.recertify_schedule == "*/10 * * * *"
    assert settings.recertify_enabled
    assert (settings.recertify_window_h, settings.recertify_failed_after_h) == (24.0, 6.0)


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_off_disables_the_schedule(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    settings = _settings(monkeypatch, MODELCERT_RECERTIFY_SCHEDULE=value)
    assert not settings.recertify_enabled


def test_a_seconds_field_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, MODELCERT_RECERTIFY_SCHEDULE="*/30 * * * * *")
    assert settings.recertify_schedule == "*/30 * * * * *"


@pytest.mark.parametrize("value", ["every ten minutes", "61 * * * *", "* * *", ""])
def test_a_bad_cron_is_rejected_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(ValueError, match=r"MODELCERT_RECERTIFY_SCHEDULE\n.*must be a cron"):
        _settings(monkeypatch, MODELCERT_RECERTIFY_SCHEDULE=value)


@pytest.mark.parametrize(
    "name", ["MODELCERT_RECERTIFY_WINDOW_H", "MODELCERT_RECERTIFY_FAILED_AFTER_H"]
)
def test_hours_must_be_positive(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _settings(monkeypatch, **{name: "0"})
