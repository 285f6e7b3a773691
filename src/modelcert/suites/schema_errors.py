"""jsonschema's errors, said the way a suite's author needs them: which field, what was
expected, what was there. Its own messages are written for programmers ("Additional
properties are not allowed ('usr' was unexpected)") and, for a `oneOf` such as the
assertion types, list every branch that did not match; here a `oneOf` is read by its
`type` discriminator and only the branch the author chose is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

Path = tuple[str | int, ...]
Issue = tuple[Path, str]  # where (a path into the document) and what is wrong

SHORT = 60

TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "nothing",
}
# What the items of a list are called, for "needs at least one assertion".
ITEM_NOUNS = {
    "assert": "assertion",
    "tests": "test",
    "messages": "message",
    "tools": "tool",
    "stop": "stop sequence",
}


def schema_issues(document: Any, validator: Draft202012Validator) -> list[Issue]:
    """Every schema error in `document` (not only the first), deduplicated, in order."""
    issues: list[Issue] = []
    for error in validator.iter_errors(document):
        for issue in _issues(error):
            if issue not in issues:
                issues.append(issue)
    return issues


def describe(value: Any) -> str:
    """A value as the author wrote it, in words: "the integer 30", "a list"."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    return f"a {type(value).__name__} value"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…'"


def _issues(error: ValidationError) -> list[Issue]:
    path: Path = tuple(error.absolute_path)
    keyword = error.validator
    instance: Any = error.instance
    value: Any = error.validator_value
    if keyword in ("oneOf", "anyOf"):
        return _choice(error, path)
    if keyword == "required":
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        return [((*path, name), "required field is missing") for name in missing]
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = list(_schema(error).get("properties", {}))
        return [
            ((*path, key), f"unknown field {key!r} (expected one of: {', '.join(known)})")
            for key in instance
            if key not in known and isinstance(key, str)  # other keys: `definition` says
        ]
    return [(path, _message(error, path))]


def _schema(error: ValidationError) -> dict[str, Any]:
    return error.schema if isinstance(error.schema, dict) else {}


def _message(error: ValidationError, path: Path) -> str:
    keyword = error.validator
    instance: Any = error.instance
    value: Any = error.validator_value
    described = _schema(error).get("description")
    if keyword == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        words = " or ".join(TYPE_WORDS.get(name, name) for name in wanted)
        hint = ""
        if "string" in wanted and isinstance(instance, bool | int | float):
            hint = " (quote it to make it a string)"
        return f"expected {words}, got {describe(instance)}{hint}"
    if keyword == "enum":
        return f"{_short(instance)} is not one of: {', '.join(map(str, value))}"
    if keyword == "const":
        return f"expected {value!r}, got {describe(instance)}"
    if keyword == "pattern":
        expected = described or f"text matching {value}"
        return f"{_short(instance)} is not valid: expected {expected}"
    bounds = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if keyword in bounds:
        return f"must be {bounds[str(keyword)]} {value} (got {instance})"
    noun = ITEM_NOUNS.get(str(path[-1]), "item") if path else "item"
    if keyword == "minItems":
        return f"needs at least one {noun}" if value == 1 else f"needs at least {value} {noun}s"
    if keyword == "maxItems":
        return f"at most {value} {noun}s are allowed (got {len(instance)})"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "uniqueItems":
        return f"{_short(_repeated(instance))} is listed twice"
    if keyword in ("minProperties", "maxProperties") and described:
        return f"{described}, got {', '.join(map(str, instance)) or 'none'}"
    return str(error.message)


def _repeated(items: Sequence[Any]) -> Any:
    seen: list[Any] = []
    for item in items:
        if item in seen:
            return item
        seen.append(item)
    return None


def _choice(error: ValidationError, path: Path) -> list[Issue]:
    """A `oneOf`: the branch named by the instance's `type`, or which keys it needs."""
    branches: Sequence[dict[str, Any]] = error.validator_value  # type: ignore[assignment]
    instance: Any = error.instance
    title = _schema(error).get("title", "value")
    types = [branch.get("properties", {}).get("type", {}).get("const") for branch in branches]
    if all(isinstance(name, str) for name in types):
        expected = ", ".join(types)
        if not isinstance(instance, dict):
            article = "an" if title[:1] in "aeiou" else "a"
            got = describe(instance)
            return [(path, f"expected {article} {title} (a mapping with a `type`), got {got}")]
        if "type" not in instance:
            return [(path, f"the {title} has no `type` (expected one of: {expected})")]
        chosen = instance["type"]
        if chosen not in types:
            return [(path, f"unknown {title} type {_short(chosen)} (expected one of: {expected})")]
        index = types.index(chosen)
        return _flatten(
            _issues(sub) for sub in error.context or () if sub.relative_schema_path[0] == index
        ) or [(path, str(error.message))]
    keys = [branch["required"][0] for branch in branches if list(branch) == ["required"]]
    if len(keys) == len(branches):
        if not isinstance(instance, dict):
            return []  # the `type` error on the same node says it
        given = [key for key in keys if key in instance]
        if not given:
            return [(path, f"needs {' or '.join(map(repr, keys))}")]
        return [(path, f"{' and '.join(map(repr, given))} exclude each other: give one")]
    return [(path, str(error.message))]


def _flatten(groups: Iterable[list[Issue]]) -> list[Issue]:
    return [issue for group in groups for issue in group]
