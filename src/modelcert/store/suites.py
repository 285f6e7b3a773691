"""Test suites as loaded from their files (`modelcert.suites`): one row per version.

A version is the content hash of the normalised definition, so loading the same file
twice stores nothing new; loading a changed file adds a version and makes it the name's
`current` one. Older versions stay, for history: a run records `name@version` and must
still find what that version was. Removing a suite marks every version inactive (no
certification chooses it any more); nothing is deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelcert.errors import NotFoundError, UserError
from modelcert.store import audit
from modelcert.store.models import Suite, utcnow

if TYPE_CHECKING:
    from modelcert.suites.loader import LoadedSuite

# The built-in battery and its smoke subset are modelcert's own suites.
RESERVED_NAMES = ("builtin", "smoke")
# A version prefix shorter than this would match too much (versions are 16 hex chars).
MIN_VERSION_PREFIX = 6
_HEX = frozenset("0123456789abcdef")


def store_suite(
    session: Session,
    loaded: LoadedSuite,
    *,
    loaded_by: str | None,
    interface: str | None = None,
) -> tuple[Suite, bool]:
    """Store one validated suite; (its row, True) when this version is new. The version
    stored becomes the name's current, active one, whether new or loaded before (loading
    an older file again makes it current again). With `interface` (api, cli, dashboard)
    the load is recorded in the audit log as `loaded_by`'s."""
    if loaded.name in RESERVED_NAMES:
        raise UserError(
            f"name: {loaded.name!r} is reserved (modelcert's own suite); choose another",
            field="name",
        )
    existing = session.scalars(
        select(Suite).where(Suite.name == loaded.name, Suite.version == loaded.version)
    ).one_or_none()
    changed = existing is None or not (existing.current and existing.active)
    session.execute(
        update(Suite)
        .where(Suite.name == loaded.name, Suite.version != loaded.version, Suite.current.is_(True))
        .values(current=False)
    )
    if existing is None:
        row = Suite(
            name=loaded.name,
            version=loaded.version,
            description=loaded.description,
            definition=loaded.definition,
            source=loaded.source,
            source_name=loaded.source_name,
            current=True,
            active=True,
            loaded_by=loaded_by,
            loaded_at=utcnow(),
        )
        session.add(row)
    else:
        row = existing
        row.current = True
        row.active = True
    session.flush()
    if interface is not None and changed:
        audit.record(
            session,
            actor=loaded_by or "unknown",
            interface=interface,
            action="suite.load",
            target=f"{row.name}@{row.version}",
            details={"created": existing is None, "sourceName": loaded.source_name},
        )
    return row, existing is None


def list_suites(session: Session, *, include_removed: bool = False) -> list[Suite]:
    """Each suite's current version, by name; removed ones only with `include_removed`."""
    query = select(Suite).where(Suite.current.is_(True))
    if not include_removed:
        query = query.where(Suite.active.is_(True))
    return list(session.scalars(query.order_by(Suite.name)))


def active_suites(session: Session) -> list[Suite]:
    """The versions a certification may choose without naming them: current and active."""
    return list_suites(session)


def suite_versions(session: Session, name: str) -> list[Suite]:
    """Every version of the suite `name`, newest first; NotFoundError when none is."""
    rows = list(
        session.scalars(
            select(Suite)
            .where(Suite.name == name)
            .order_by(Suite.loaded_at.desc(), Suite.id.desc())
        )
    )
    if not rows:
        raise _not_loaded(name)
    return rows


def get_suite(
    session: Session, name: str, version: str | None = None, *, include_removed: bool = False
) -> Suite:
    """The suite `name` (or `name@version`): its current version, or `version` (its first
    6 or more hex characters will do). A removed suite's versions are still found by
    version (runs name them); without a version, only an active suite is unless
    `include_removed`. NotFoundError naming it."""
    name, _, pinned = name.partition("@")
    version = version or pinned or None
    if version is None:
        query = select(Suite).where(Suite.name == name, Suite.current.is_(True))
        if not include_removed:
            query = query.where(Suite.active.is_(True))
        row = session.scalars(query).one_or_none()
        if row is None:
            removed = session.scalars(select(Suite.id).where(Suite.name == name)).first()
            if removed is not None:
                raise NotFoundError(
                    f"suite {name!r} was removed (load its file again to restore it)",
                    field="name",
                )
            raise _not_loaded(name)
        return row
    version = version.strip().lower()
    if not (len(version) >= MIN_VERSION_PREFIX and set(version) <= _HEX):
        raise UserError(
            f"version {version[:40]!r}: expected the version's first "
            f"{MIN_VERSION_PREFIX} or more hex characters",
            field="version",
        )
    # Hex digits only (checked above): nothing LIKE would read as a wildcard.
    rows = list(
        session.scalars(
            select(Suite).where(Suite.name == name, Suite.version.like(f"{version}%")).limit(2)
        )
    )
    if not rows:
        raise NotFoundError(f"suite {name}@{version} is not loaded", field="version")
    if len(rows) > 1:
        raise UserError(
            f"version {version!r} of suite {name!r} is ambiguous; give more characters",
            field="version",
        )
    return rows[0]


def remove_suite(
    session: Session, name: str, *, removed_by: str | None = None, interface: str | None = None
) -> int:
    """Mark every version of `name` inactive (kept for history); how many were active.
    NotFoundError when no such suite was ever loaded."""
    rows = suite_versions(session, name)
    active = [row for row in rows if row.active]
    for row in active:
        row.active = False
    session.flush()
    if interface is not None and active:
        audit.record(
            session,
            actor=removed_by or "unknown",
            interface=interface,
            action="suite.remove",
            target=name,
            details={"versions": [row.version for row in active]},
        )
    return len(active)


def summary(row: Suite) -> dict[str, Any]:
    """One suite version as the CLI's and the API's listings show it (camelCase)."""
    definition = row.definition or {}
    attach = definition.get("attach") or {}
    return {
        "name": row.name,
        "version": row.version,
        "ref": f"{row.name}@{row.version}",
        "description": row.description,
        "tests": len(definition.get("tests") or ()),
        "attach": {
            "all": bool(attach.get("all")),
            "providers": list(attach.get("providers") or ()),
            "deployments": list(attach.get("deployments") or ()),
        },
        "attachSummary": attach_summary(definition),
        "builtin": definition.get("builtin", "keep"),
        "current": row.current,
        "active": row.active,
        "sourceName": row.source_name,
        "loadedBy": row.loaded_by,
        "loadedAt": row.loaded_at.isoformat(),
    }


def detail(row: Suite) -> dict[str, Any]:
    """`summary` plus each test: its assertions' types, weight, required."""
    tests = [
        {
            "id": test.get("id"),
            "title": test.get("title") or test.get("id"),
            "weight": test.get("weight", 1),
            "required": bool(test.get("required")),
            "requires": list(test.get("requires") or ()),
            "assertions": [assertion_label(a) for a in test.get("assert") or ()],
        }
        for test in (row.definition or {}).get("tests") or ()
    ]
    return {**summary(row), "testList": tests, "definition": row.definition, "source": row.source}


def assertion_label(assertion: dict[str, Any]) -> str:
    """`contains`, or `any-of(contains, regex)` for a combinator."""
    kind = str(assertion.get("type", "?"))
    children = assertion.get("assert")
    if isinstance(children, list):
        return f"{kind}({', '.join(assertion_label(child) for child in children)})"
    return kind


def attach_summary(definition: dict[str, Any]) -> str:
    """Where a suite attaches, in a few words: `all`, `providers: a, b`, or `-`."""
    attach = definition.get("attach") or {}
    if attach.get("all"):
        return "all"
    parts = []
    if attach.get("providers"):
        parts.append("providers: " + ", ".join(attach["providers"]))
    if attach.get("deployments"):
        parts.append("deployments: " + ", ".join(attach["deployments"]))
    return "; ".join(parts) or "-"


def _not_loaded(name: str) -> NotFoundError:
    return NotFoundError(
        f"no suite {name!r} is loaded (load it with: modelcert suite load FILE)", field="name"
    )
