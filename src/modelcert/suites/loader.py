"""Reading a suite file: YAML in, a `LoadedSuite` (normalised definition and version) out,
or a `SuiteFileError` listing every problem as `file:line: field: message`.

YAML is composed into nodes before it is constructed, so that every field keeps the line
it was written on; jsonschema's error paths are then mapped back to those lines. YAML's
own leniencies that hide mistakes are refused: duplicate keys (the last silently wins),
and dates (read as text, not as `datetime`, so that JSON can hold them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modelcert.errors import UserError
from modelcert.suites.definition import normalise, semantic_issues, suite_version

__all__ = [
    "LoadedSuite",
    "SuiteFileError",
    "SuiteProblem",
    "load_suite_file",
    "parse_suite",
    "suite_schema",
    "suite_version",
]
from modelcert.suites.schema_errors import Issue, Path, schema_issues

MAX_BYTES = 1_000_000
# Aliases can make a small file expand to a huge document (each `*a` repeats `&a`);
# no real suite comes near this many values once expanded.
MAX_VALUES = 250_000
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class SuiteProblem:
    """One thing wrong with a suite file; `line` is 1-based, None when unknown."""

    file: str
    line: int | None
    field: str  # dotted path, `tests[2].assert[0].value`; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class SuiteFileError(UserError):
    """A suite that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[SuiteProblem]) -> None:
        super().__init__(
            "\n".join(str(problem) for problem in problems),
            field=problems[0].field or None if problems else None,
        )
        self.problems = problems


@dataclass(frozen=True)
class LoadedSuite:
    name: str
    version: str
    description: str | None
    definition: dict[str, Any]
    source: str  # the YAML text as given
    source_name: str  # a file name, or what the caller calls the text

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# libyaml's parser when PyYAML was built with it: ten times as fast, the same marks.
LOADER_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SuiteLoader(LOADER_BASE):  # type: ignore[valid-type,misc]
    """SafeLoader without timestamps: `2024-05-01` stays the text it was written as."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


@cache
def suite_schema() -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of a suite file."""
    text = resources.files("modelcert.suites").joinpath("suite.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(suite_schema())


def load_suite_file(path: str | FilePath) -> LoadedSuite:
    """Read and parse a suite file; an unreadable file is a `SuiteFileError` too."""
    name = str(path)
    try:
        size = FilePath(path).stat().st_size
        if size > MAX_BYTES:
            raise _fatal(name, None, f"the file is larger than 1 MB ({size} bytes)")
        text = FilePath(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fatal(name, None, f"the file is not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise _fatal(name, None, f"cannot read the file: {exc.strerror or exc}") from exc
    return parse_suite(text, name)


def parse_suite(text: str, source_name: str = "<suite>") -> LoadedSuite:
    """Validate and normalise a suite's YAML text; raises `SuiteFileError`."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise _fatal(source_name, None, f"the file is larger than 1 MB ({size} bytes)")
    root, document, yaml_issues = _compose(text, source_name)
    if not isinstance(document, dict):
        line = root.start_mark.line + 1 if root is not None else None
        raise _fatal(
            source_name, line, f"a suite is a mapping (name:, tests:, …), not {_what(document)}"
        )
    issues = schema_issues(document, _validator()) + semantic_issues(document)
    problems = yaml_issues + [_problem(source_name, root, issue) for issue in issues]
    if problems:
        raise SuiteFileError(sorted(problems, key=lambda p: (p.line or 0, p.field)))
    definition = normalise(document)
    return LoadedSuite(
        name=definition["name"],
        version=suite_version(definition),
        description=definition["description"],
        definition=definition,
        source=text,
        source_name=source_name,
    )


def _compose(text: str, source_name: str) -> tuple[Node | None, Any, list[SuiteProblem]]:
    """(root node, the constructed document, duplicate-key problems); YAML that cannot be
    read at all raises."""
    loader = _SuiteLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise _fatal(source_name, None, "the file is empty")
        problems = _key_problems(root, source_name)
        document = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        raise _fatal(source_name, line, f"invalid YAML: {detail}") from exc
    except yaml.YAMLError as exc:
        raise _fatal(source_name, None, f"invalid YAML: {exc}") from exc
    except RecursionError as exc:
        raise _fatal(source_name, None, "invalid YAML: nested too deeply") from exc
    finally:
        loader.dispose()
    return root, document, problems


def _key_problems(root: Node, source_name: str) -> list[SuiteProblem]:
    """Duplicate keys in any mapping; raises for a document that aliases make recursive
    or blow up (each `*a` repeats all of `&a` in the constructed document)."""
    problems: list[SuiteProblem] = []
    expanded = _expanded_size(root, (), {}, set(), problems, source_name)
    if expanded > MAX_VALUES:
        raise _fatal(source_name, None, f"the document expands to more than {MAX_VALUES} values")
    return problems


def _expanded_size(
    node: Node,
    path: Path,
    sizes: dict[int, int],
    enclosing: set[int],
    problems: list[SuiteProblem],
    source_name: str,
) -> int:
    """How many values `node` stands for once its aliases are expanded; each distinct
    node is checked for duplicate keys once (at the first path that reaches it)."""
    if id(node) in enclosing:
        raise _fatal(
            source_name, node.start_mark.line + 1, "an alias refers to a node that contains it"
        )
    if id(node) in sizes:
        return sizes[id(node)]
    enclosing.add(id(node))
    total = 1
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            total += _expanded_size(item, (*path, index), sizes, enclosing, problems, source_name)
    elif isinstance(node, MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else "?"
            if isinstance(key, ScalarNode) and key.tag != MERGE_TAG:
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first_line:
                    first = first_line[key.tag, key.value]
                    problems.append(
                        SuiteProblem(
                            source_name,
                            line,
                            _field((*path, name)),
                            f"duplicate key (first at line {first})",
                        )
                    )
                first_line.setdefault((key.tag, key.value), line)
            total += _expanded_size(value, (*path, name), sizes, enclosing, problems, source_name)
    enclosing.discard(id(node))
    sizes[id(node)] = total
    return total


def _problem(source_name: str, root: Node | None, issue: Issue) -> SuiteProblem:
    path, message = issue
    return SuiteProblem(source_name, _line(root, path), _field(path), message)


def _line(root: Node | None, path: Path) -> int | None:
    """The line of the deepest node of `path` that exists: a mapping entry's key, a list
    item's first line; for a missing field, the mapping that lacks it."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for part in path:
        if isinstance(node, MappingNode):
            entries = [
                (key, value)
                for key, value in node.value
                if isinstance(key, ScalarNode) and key.value == str(part)
            ]
            if not entries:
                break
            key, node = entries[-1]  # the one construction kept
            line = key.start_mark.line + 1
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _what(document: Any) -> str:
    if isinstance(document, list):
        return "a list"
    if isinstance(document, str):
        return "plain text"
    return "a single value"


def _fatal(source_name: str, line: int | None, message: str) -> SuiteFileError:
    return SuiteFileError([SuiteProblem(source_name, line, "", message)])
