"""`modelcert suite load|validate|list|show|versions|remove|schema`: test suites as files
(`modelcert.suites`), stored and versioned in the database (`store.suites`; the API's
/api/suites, on the database directly).

A malformed file is every problem on stderr, one `file:line: field: message` line each,
and exit 2; `load` stores nothing unless every file it was given is valid."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from modelcert.cli.common import EXIT_USAGE, cli_actor, console, session_factory
from modelcert.errors import UserError

if TYPE_CHECKING:
    from modelcert.suites.loader import LoadedSuite

suite_app = typer.Typer(
    help="Test suites as YAML files: validate, load (versioned by content), list, show.",
    no_args_is_help=True,
)

FilesArgument = Annotated[
    list[str],
    typer.Argument(metavar="FILE...", help="Suite files (YAML); `-` reads one from stdin."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="As JSON.")]


def _out(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _read_all(files: list[str], then: str = "") -> list[LoadedSuite]:
    """Every file parsed and validated; when any is not, every problem of every file on
    stderr and exit 2 (nothing is loaded from a call with one bad file)."""
    from modelcert.suites.loader import SuiteFileError, load_suite_file, parse_suite

    loaded: list[LoadedSuite] = []
    problems: list[str] = []
    bad_files = 0
    for name in files:
        try:
            if name == "-":
                loaded.append(parse_suite(sys.stdin.read(), "<stdin>"))
            else:
                loaded.append(load_suite_file(name))
        except SuiteFileError as exc:
            bad_files += 1
            problems.extend(str(problem) for problem in exc.problems)
            if not exc.problems:
                problems.append(f"{name}: {exc.message}")
    seen: dict[str, LoadedSuite] = {}
    for suite in loaded:
        first = seen.setdefault(suite.name, suite)
        if first is not suite and first.version != suite.version:
            bad_files += 1
            problems.append(
                f"{suite.source_name}: name: suite {suite.name!r} is also defined, "
                f"differently, by {first.source_name}"
            )
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        where = f"{bad_files} file{'s' if bad_files != 1 else ''}"
        print(f"error: {count} in {where}{then}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)
    return loaded


def _tests(suite: LoadedSuite) -> str:
    count = len(suite.definition.get("tests") or ())
    return f"{count} test{'s' if count != 1 else ''}"


@suite_app.command("validate")
def suite_validate(files: FilesArgument) -> None:
    """Check suite files against the schema and the rules (no database needed)."""
    for suite in _read_all(files):
        _out(f"valid {suite.source_name}: {suite.ref} ({_tests(suite)})")


@suite_app.command("load")
def suite_load(files: FilesArgument) -> None:
    """Validate and store suite files: a changed file is a new version (its content
    hash), made current; an unchanged one stores nothing. All or nothing."""
    from modelcert.store import db
    from modelcert.store import suites as store

    checked = _read_all(files, "; nothing loaded")
    actor = cli_actor()
    lines: list[str] = []
    with db.transaction(session_factory()) as session:
        for suite in checked:
            try:
                was_current = store.get_suite(session, suite.name).version == suite.version
            except UserError:
                was_current = False
            _, created = store.store_suite(session, suite, loaded_by=actor, interface="cli")
            verb = "loaded" if created else ("unchanged" if was_current else "restored")
            lines.append(f"{verb} {suite.ref} ({_tests(suite)})")
    for line in lines:
        _out(line)


@suite_app.command("list")
def suite_list(
    as_json: JsonOption = False,
    include_removed: Annotated[bool, typer.Option("--all", help="Removed suites too.")] = False,
) -> None:
    """The loaded suites (their current versions)."""
    from modelcert.store import db
    from modelcert.store import suites as store

    with db.transaction(session_factory()) as session:
        rows = [
            store.summary(row)
            for row in store.list_suites(session, include_removed=include_removed)
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        _out("no suites loaded (modelcert suite load FILE)")
        return
    from rich.table import Table

    table = Table("suite", "version", "tests", "attach", "builtin", "loaded (UTC)", "by")
    for row in rows:
        name = row["name"] if row["active"] else f"{row['name']} (removed)"
        table.add_row(
            name,
            row["version"],
            str(row["tests"]),
            row["attachSummary"],
            row["builtin"],
            row["loadedAt"][:19].replace("T", " "),
            row["loadedBy"] or "",
        )
    console.print(table)


@suite_app.command("show")
def suite_show(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A suite.")],
    as_json: JsonOption = False,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="The file as it was loaded.")] = False,
) -> None:
    """A suite: its tests, their assertions, weights and whether they are required."""
    from modelcert.store import db
    from modelcert.store import suites as store

    if as_json and as_yaml:
        raise UserError("give --json or --yaml, not both")
    with db.transaction(session_factory()) as session:
        shown = store.detail(store.get_suite(session, ref.strip(), include_removed=True))
    if as_yaml:
        source: str = shown["source"]
        sys.stdout.write(source if source.endswith("\n") else f"{source}\n")
        return
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    state = ("current" if shown["current"] else "older version") + (
        "" if shown["active"] else ", removed"
    )
    _out(f"{shown['ref']} ({state})")
    if shown["description"]:
        _out(shown["description"])
    _out(f"attach: {shown['attachSummary']}    builtin: {shown['builtin']}")
    by = f" by {shown['loadedBy']}" if shown["loadedBy"] else ""
    source_name = f" from {shown['sourceName']}" if shown["sourceName"] else ""
    _out(f"loaded {shown['loadedAt'][:19].replace('T', ' ')} UTC{by}{source_name}")
    from rich.table import Table

    table = Table("test", "title", "weight", "required", "requires", "assertions")
    for test in shown["testList"]:
        table.add_row(
            f"{shown['name']}/{test['id']}",
            test["title"],
            f"{test['weight']:g}",
            "yes" if test["required"] else "",
            ", ".join(test["requires"]),
            ", ".join(test["assertions"]),
        )
    console.print(table)


@suite_app.command("versions")
def suite_versions(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A suite's name.")],
    as_json: JsonOption = False,
) -> None:
    """Every version of a suite loaded, newest first (runs name them: `name@version`)."""
    from modelcert.store import db
    from modelcert.store import suites as store

    with db.transaction(session_factory()) as session:
        rows = [store.summary(row) for row in store.suite_versions(session, name.strip())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "current" if row["current"] else ""
        if not row["active"]:
            state = f"{state}, removed" if state else "removed"
        by = f" by {row['loadedBy']}" if row["loadedBy"] else ""
        _out(
            f"{row['ref']}  {row['tests']} tests  "
            f"{row['loadedAt'][:19].replace('T', ' ')} UTC{by}  {state}".rstrip()
        )


@suite_app.command("remove")
def suite_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A suite's name.")],
) -> None:
    """Stop running a suite (every version inactive; kept, for the runs that name them)."""
    from modelcert.store import db
    from modelcert.store import suites as store

    name = name.strip()
    with db.transaction(session_factory()) as session:
        removed = store.remove_suite(session, name, removed_by=cli_actor(), interface="cli")
    _out(f"suite {name} removed" if removed else f"suite {name} was removed already")


@suite_app.command("schema")
def suite_schema_command() -> None:
    """The JSON Schema of a suite file, for editors (`$schema` / yaml-language-server)."""
    from modelcert.suites.loader import suite_schema

    print(json.dumps(suite_schema(), indent=2))
