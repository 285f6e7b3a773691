"""docs/worker-guide.md lists every setting with its default, generated from the Settings
model: this fails when a setting is added, renamed or changes its default or description
until the table is regenerated with

    .venv/bin/python -m tests.unit.test_deploy_worker_guide --write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from modelcert.settings import Settings

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "worker-guide.md"
START = (
    "<!-- settings-table:start (generated: python -m tests.unit.test_deploy_worker_guide"
    " --write) -->"
)
END = "<!-- settings-table:end -->"
# Settings whose Field has no description yet.
FALLBACK = {
    "certification_queue_name": "Prefix of the region queues (`<name>.<region>`) in DBOS.",
    "worker_health_port": "Port of a worker's health server (/live, /ready, /health, /metrics).",
    "log_level": "DEBUG, INFO, WARNING or ERROR.",
}


def env_names(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias)] if alias else []


def default_text(field: FieldInfo) -> str:
    default = field.default
    if default is PydanticUndefined or default is None:
        return "(none)"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        names = " or ".join(f"`{env}`" for env in env_names(field)) or f"`{name}`"
        meaning = " ".join((field.description or FALLBACK.get(name, "")).split())
        meaning = meaning.replace("|", "\\|")
        rows.append(f"| {names} | `{default_text(field)}` | {meaning} |")
    return "\n".join(rows)


def generated_block(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.DOTALL)
    assert match, f"{GUIDE.name} has no generated settings table"
    return match[1]


def test_every_setting_is_in_the_guide_with_its_default() -> None:
    text = GUIDE.read_text()
    documented = generated_block(text)
    for field in Settings.model_fields.values():
        for env in env_names(field):
            assert f"`{env}`" in documented, f"{env} is missing from {GUIDE.name}"
    assert documented == settings_table(), (
        f"the settings table in {GUIDE.name} is out of date: run "
        "python -m tests.unit.test_deploy_worker_guide --write"
    )


def test_every_setting_has_a_meaning() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description or name in FALLBACK, f"say what {name} is for"


def write() -> None:
    text = GUIDE.read_text()
    old = generated_block(text)
    GUIDE.write_text(text.replace(f"{START}\n{old}\n{END}", f"{START}\n{settings_table()}\n{END}"))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(settings_table())
