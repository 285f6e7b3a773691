"""Which suites a certification runs (issue 13): the built-in battery, its smoke subset,
and the suites loaded from files (`modelcert.suites`, table `suites`).

    chosen per job or per call (`--suite NAME[@VERSION]`, repeatable): exactly those;
        `builtin` is the built-in battery, `smoke` its cheapest meaningful subset
    otherwise: `builtin` (unless a suite attached to the deployment says `builtin: off`)
        and every active suite attached to the deployment: to all, to its provider, or
        to the deployment itself (`provider/model-id`)

The choice names each suite's exact version: the run records it, so a verdict says what
it proved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from modelcert import __version__
from modelcert.domain import DeploymentSpec
from modelcert.errors import UserError
from modelcert.store.models import Suite
from modelcert.store.suites import active_suites, get_suite

BUILTIN = "builtin"
SMOKE = "smoke"
RESERVED_SUITES = (BUILTIN, SMOKE)
# The built-in suites change only with modelcert itself: their version is its version.
BUILTIN_VERSION = __version__


@dataclass(frozen=True)
class SuiteChoice:
    """What one certification runs: the built-in battery (`builtin`, `smoke` or None) and
    the loaded suites, as (name@version, normalised definition), in order."""

    builtin: str | None
    suites: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def refs(self) -> list[str]:
        """Every suite version the certification runs, `name@version`."""
        refs = [f"{self.builtin}@{BUILTIN_VERSION}"] if self.builtin else []
        return refs + [ref for ref, _ in self.suites]


def parse_suite_names(values: Sequence[str] | None) -> list[str] | None:
    """`--suite` values (repeatable, or comma-separated) as a list; None when none given.
    Raises UserError for an empty or malformed name."""
    if values is None:
        return None
    names: list[str] = []
    for value in values:
        for part in str(value).split(","):
            name = part.strip()
            if not name:
                raise UserError("suite: empty suite name", field="suite")
            bare, _, version = name.partition("@")
            if not bare or len(name) > 120 or not all(c.isalnum() or c in "-_@." for c in name):
                raise UserError(f"suite: not a suite name: {name!r}", field="suite")
            if bare in RESERVED_SUITES and version:
                raise UserError(
                    f"suite: {bare} has no versions of its own (it is modelcert's)", field="suite"
                )
            if name not in names:
                names.append(name)
    return names


def check_suite_names(session: Session, names: Sequence[str]) -> None:
    """Refuse, before anything is queued, a `--suite` naming no loaded suite."""
    for name in names:
        if name.partition("@")[0] not in RESERVED_SUITES:
            _named_version(session, name)


def choose_suites(
    session: Session, spec: DeploymentSpec, requested: Sequence[str] | None
) -> SuiteChoice:
    """The suites one certification of `spec` runs (see the module docstring)."""
    if requested:
        builtin: str | None = None
        chosen: list[tuple[str, dict[str, Any]]] = []
        for name in requested:
            bare = name.partition("@")[0]
            if bare in RESERVED_SUITES:
                # builtin and smoke together: the whole battery covers the smoke tests.
                builtin = BUILTIN if BUILTIN in (builtin, bare) else SMOKE
                continue
            row = _named_version(session, name)
            chosen.append((f"{row.name}@{row.version}", row.definition))
        return SuiteChoice(builtin, tuple(chosen))
    attached = [row for row in active_suites(session) if _attaches(row.definition, spec)]
    keep_builtin = all(row.definition.get("builtin", "keep") != "off" for row in attached)
    return SuiteChoice(
        BUILTIN if keep_builtin else None,
        tuple((f"{row.name}@{row.version}", row.definition) for row in attached),
    )


def _named_version(session: Session, name: str) -> Suite:
    """A loaded suite by `name` or `name@version`; errors name the `suite` option."""
    try:
        return get_suite(session, name)
    except UserError as exc:
        raise type(exc)(f"suite: {exc.message}", field="suite") from None


def _attaches(definition: dict[str, Any], spec: DeploymentSpec) -> bool:
    attach = definition.get("attach") or {}
    if attach.get("all"):
        return True
    if spec.provider_slug in (attach.get("providers") or ()):
        return True
    return spec.label in (attach.get("deployments") or ())
