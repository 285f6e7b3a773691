"""A suite's meaning once its shape is right: the checks JSON Schema cannot express
(unique ids, regexes that compile, schemas that are schemas, the order of turns) and the
normalised definition that is stored, planned and hashed into the suite's version.

The checks read the raw document defensively: they run even when the schema found
errors, so that one pass reports everything wrong with a file. `normalise` needs a
document that passed both.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from modelcert.suites.schema_errors import Issue, Path

RESERVED_NAMES = ("builtin", "smoke")
REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
DEFAULT_THRESHOLD = 0.5
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
# `defaults:` keys that are request parameters (the rest is the test's timeout).
PARAM_KEYS = ("temperature", "top_p", "max_tokens", "stop", "stream", "tools", "response_format")


def suite_version(definition: dict[str, Any]) -> str:
    """The first 16 hex digits of the sha256 of the canonical JSON of `definition`."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def regex_flags(flags: str) -> int:
    value = 0
    for letter in flags:
        value |= REGEX_FLAGS[letter]
    return value


# --- checks the schema cannot make --------------------------------------------------


def semantic_issues(document: dict[str, Any]) -> list[Issue]:
    """What is wrong with a suite beyond its shape; [] when nothing is."""
    issues = list(_plain_json(document, ()))
    name = document.get("name")
    if name in RESERVED_NAMES:
        issues.append(
            (("name",), f"{name!r} is reserved (the built-in battery and its smoke subset)")
        )
    defaults = document.get("defaults")
    defaults = defaults if isinstance(defaults, dict) else {}
    issues.extend(_request_issues(defaults, ("defaults",)))
    tests = document.get("tests")
    first_of: dict[str, int] = {}
    for index, test in enumerate(tests if isinstance(tests, list) else []):
        if not isinstance(test, dict):
            continue
        path: Path = ("tests", index)
        test_id = test.get("id")
        if isinstance(test_id, str):
            if test_id in first_of:
                issues.append(
                    (
                        (*path, "id"),
                        f"duplicate test id {test_id!r} (also tests[{first_of[test_id]}])",
                    )
                )
            first_of.setdefault(test_id, index)
        issues.extend(_message_issues(test.get("messages"), (*path, "messages")))
        issues.extend(_request_issues(test, path))
        tools = test["tools"] if "tools" in test else defaults.get("tools")
        offered = [tool.get("name") for tool in _mappings(tools)]
        for assertion, where in _assertions(test.get("assert"), (*path, "assert")):
            issues.extend(_assertion_issues(assertion, where, offered))
    return issues


def _plain_json(value: Any, path: Path) -> Iterator[Issue]:
    """Values JSON cannot hold (YAML's binary, sets, non-string keys, .nan)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield (
                    (*path, str(key)),
                    f"the key {key!r} is not text (YAML reads yes/no/on/off as true/false "
                    "and digits as numbers): quote it",
                )
            else:
                yield from _plain_json(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plain_json(item, (*path, index))
    elif isinstance(value, float) and not math.isfinite(value):
        yield (path, f"{value} is not a number JSON can hold")
    elif value is not None and not isinstance(value, str | int | float | bool):
        yield (path, f"a {type(value).__name__} value is not plain JSON")


def _mappings(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _schema_issue(schema: Any, path: Path) -> list[Issue]:
    if not isinstance(schema, dict):
        return []  # the schema's own `type` error says it
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(part) for part in exc.path)
        return [
            (path, f"not a valid JSON schema: {exc.message}" + (f" (at {where})" if where else ""))
        ]
    return []


def _request_issues(holder: dict[str, Any], path: Path) -> list[Issue]:
    issues: list[Issue] = []
    names: list[Any] = []
    tools = holder.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(tool, dict):
            continue
        where: Path = (*path, "tools", index)
        issues.extend(_schema_issue(tool.get("parameters"), (*where, "parameters")))
        name = tool.get("name")
        if name in names:
            issues.append(((*where, "name"), f"tool {name!r} is defined twice"))
        names.append(name)
    response_format = holder.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        issues.extend(
            _schema_issue(response_format.get("schema"), (*path, "response_format", "schema"))
        )
    return issues


def _message_issues(messages: Any, path: Path) -> list[Issue]:
    roles = [
        (index, next(iter(message)))
        for index, message in enumerate(messages if isinstance(messages, list) else [])
        if isinstance(message, dict) and len(message) == 1
    ]
    issues: list[Issue] = [
        ((*path, index), "a system message must be the first message")
        for index, role in roles
        if role == "system" and index > 0
    ]
    if roles and roles[-1][1] != "user":
        issues.append(
            (
                (*path, roles[-1][0]),
                "the last message must be a user turn (the one the model answers)",
            )
        )
    return issues


def every_assertion(definition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every assertion of every test of a suite, those inside any-of / all-of included."""
    for index, test in enumerate(definition.get("tests") or ()):
        if isinstance(test, dict):
            for assertion, _ in _assertions(test.get("assert"), ("tests", index, "assert")):
                yield assertion


def _assertions(items: Any, path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """Every assertion in a list, the ones inside any-of / all-of included."""
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            yield item, (*path, index)
            if item.get("type") in ("any-of", "all-of"):
                yield from _assertions(item.get("assert"), (*path, index, "assert"))


def _assertion_issues(assertion: dict[str, Any], path: Path, offered: list[Any]) -> list[Issue]:
    kind = assertion.get("type")
    if kind == "regex" and isinstance(assertion.get("value"), str):
        flags = assertion.get("flags", "")
        known = isinstance(flags, str) and set(flags) <= set(REGEX_FLAGS)
        try:
            re.compile(assertion["value"], regex_flags(flags) if known else 0)
        except re.error as exc:
            return [((*path, "value"), f"the regular expression does not compile: {exc}")]
    if kind == "json-schema":
        return _schema_issue(assertion.get("value"), (*path, "value"))
    if kind == "tool-call":
        issues = _schema_issue(assertion.get("arguments"), (*path, "arguments"))
        name = assertion.get("name")
        if isinstance(name, str) and name not in offered:
            tools = ", ".join(str(tool) for tool in offered) or "none"
            issues.append(((*path, "name"), f"the test offers no tool {name!r} (tools: {tools})"))
        return issues
    return []


# --- the normalised definition -------------------------------------------------------


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """The definition stored and run: defaults merged, one shape for every test."""
    attach = document.get("attach", {})
    defaults = document.get("defaults", {})
    return {
        "name": document["name"],
        "description": document.get("description"),
        "attach": {
            "all": bool(attach.get("all", False)),
            "providers": sorted(attach.get("providers", [])),
            "deployments": sorted(attach.get("deployments", [])),
        },
        "builtin": _builtin(document.get("builtin", "keep")),
        "tests": [_test({**defaults, **test}) for test in document["tests"]],
    }


def _builtin(value: Any) -> str:
    """`keep` or `off`; a bare `off` (or `no`) is YAML 1.1's false, `on`/`yes` its true."""
    if isinstance(value, bool):
        return "keep" if value else "off"
    return str(value)


def _test(test: dict[str, Any]) -> dict[str, Any]:
    system, messages = _conversation(test)
    timeout = test.get("timeout_s")
    return {
        "id": test["id"],
        "title": test.get("title", test["id"]),
        "weight": float(test.get("weight", 1)),
        "required": bool(test.get("required", False)),
        "requires": sorted(test.get("requires", [])),
        "system": system,
        "messages": messages,
        "params": _params(test),
        "timeout_s": float(timeout) if timeout is not None else None,
        "assert": [_assertion(item) for item in test["assert"]],
    }


def _conversation(test: dict[str, Any]) -> tuple[str | None, list[dict[str, str]]]:
    if "prompt" in test:
        return None, [{"role": "user", "content": test["prompt"]}]
    system = None
    messages = []
    for message in test["messages"]:
        ((role, content),) = message.items()
        if role == "system":
            system = content
        else:
            messages.append({"role": role, "content": content})
    return system, messages


def _params(test: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        if key in test:
            params[key] = float(test[key])
    if "max_tokens" in test:
        params["max_tokens"] = int(test["max_tokens"])
    if "stop" in test:
        params["stop"] = list(test["stop"])
    if "stream" in test:
        params["stream"] = bool(test["stream"])
    if "tools" in test:
        params["tools"] = [
            {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("parameters", NO_PARAMETERS),
            }
            for tool in test["tools"]
        ]
    response_format = test.get("response_format")
    if response_format is not None and response_format["type"] == "json":
        params["json"] = True
    elif response_format is not None:
        params["json_schema"] = response_format["schema"]
    return params


def _assertion(assertion: dict[str, Any]) -> dict[str, Any]:
    kind = assertion["type"]
    out: dict[str, Any] = {"type": kind}
    if kind in ("contains", "icontains", "not-contains", "equals", "starts-with", "json-schema"):
        out["value"] = assertion["value"]
    elif kind == "regex":
        out["value"] = assertion["value"]
        out["flags"] = "".join(sorted(set(assertion.get("flags", ""))))
    elif kind == "tool-call":
        out["name"] = assertion["name"]
        out["arguments"] = assertion.get("arguments")
    elif kind in ("max-latency-ms", "max-ttft-ms"):
        out["value"] = float(assertion["value"])
    elif kind in ("max-output-tokens", "min-output-tokens"):
        out["value"] = int(assertion["value"])
    elif kind in ("any-of", "all-of"):
        out["assert"] = [_assertion(item) for item in assertion["assert"]]
    elif kind == "llm-judge":
        out["judge"] = assertion["judge"]
        out["rubric"] = assertion["rubric"]
        out["threshold"] = float(assertion.get("threshold", DEFAULT_THRESHOLD))
    if "description" in assertion:
        out["description"] = assertion["description"]
    return out
