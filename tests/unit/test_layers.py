"""The layers, read from the source: imports point downwards only, and the engine's
dependencies are not module-level state.

    cli/ api/ worker/      entry points
    jobs/                  DBOS adapter, queues, enqueue, schedule, notifications
    catalog/ reports/      services over the store (demo catalog, discovery, reports)
    certify/               the engine and its pure decisions (suite tests among them)
    providers/             one async interface per vendor
    store/                 every table and query
    suites/ cost/          the suite file format (parse, validate); prices and budgets
    domain settings errors value types, the one Settings, user errors
    secrets validation     the registry of secrets and their masking; validated input types
    obs/                   metrics and logs (a leaf every layer may use)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "modelcert"
BASE = {
    "modelcert",
    "modelcert.domain",
    "modelcert.settings",
    "modelcert.errors",
    "modelcert.secrets",
    "modelcert.validation",
}
# What each layer may import from modelcert, besides itself and the base.
LEAVES = {"suites", "cost"}
ALLOWED: dict[str, set[str]] = {
    "suites": set(),
    "cost": set(),
    "store": LEAVES,
    "providers": set(),
    "obs": set(),
    "certify": {"providers", "obs", *LEAVES},
    "catalog": {"store", "providers", "certify", *LEAVES},
    "reports": {"store", *LEAVES},
    # reports: the latency trends the notification checks compare (jobs.notify_events).
    "jobs": {"store", "providers", "certify", "obs", "reports", *LEAVES},
    "worker": {"store", "providers", "certify", "obs", "jobs", *LEAVES},
    "api": {"store", "providers", "certify", "obs", "jobs", "reports", "catalog", *LEAVES},
    "cli": {
        "store",
        "providers",
        "certify",
        "obs",
        "jobs",
        "reports",
        "catalog",
        "worker",
        "api",
        *LEAVES,
    },
}


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "modelcert" or name.startswith("modelcert.")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if module in BASE or len(parts) < 2:
        return None
    candidate = parts[1]
    return candidate if (PACKAGE / candidate).is_dir() else None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_downwards(layer: str) -> None:
    allowed = ALLOWED[layer] | {layer}
    for path in modules(layer):
        for module in imported(path):
            below = layer_of(module)
            if below is None:
                # The base, a base module's attribute (`from modelcert import __version__`),
                # or a loose module.
                assert (
                    module in BASE
                    or module.split(".")[1] in ("__version__",)
                    or (module.rsplit(".", 1)[0] in BASE)
                ), f"{path.relative_to(PACKAGE)} imports {module}"
                continue
            assert below in allowed, f"{path.relative_to(PACKAGE)} imports {module}"


def test_the_base_imports_nothing_of_the_project() -> None:
    for name in ("domain.py", "settings.py", "errors.py", "secrets.py", "validation.py"):
        assert imported(PACKAGE / name) == set(), name


def test_no_loose_modules_but_the_base() -> None:
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose == {
        "__init__.py",
        "__main__.py",
        "domain.py",
        "settings.py",
        "errors.py",
        "secrets.py",
        "validation.py",
    }


@pytest.mark.parametrize("layer", ["jobs", "certify", "store", "worker"])
def test_no_module_level_runtime_state(layer: str) -> None:
    """Dependencies are passed in (the engine's constructor, the workflow's configured
    instance), never set on a module: no `global`, and module-level names are constants,
    type aliases (CapWords) or a module's logger."""
    for path in modules(layer):
        if "migrations" in path.parts:  # Alembic's own script layout
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Global), f"`global` in {path.relative_to(PACKAGE)}"
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets = [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        constant = name.id.isupper() or name.id[0].isupper()
                        assert constant or name.id in ("log", "__all__"), (
                            f"module-level {name.id!r} in {path.relative_to(PACKAGE)}"
                        )
