"""Runs as JUnit XML, for CI dashboards: one `<testsuite>` per run, named
`deployment @ region · run N`, with its start, the suite versions it ran, whether it was
simulated and what it cost as properties.

A built-in test is one `<testcase>` (classname the deployment, name the test id), with a
`<failure>` (type its error category) when FAILED and `<skipped>` when SKIPPED or NOT_RUN.
A suite's own test is one `<testcase>` PER ASSERTION (classname
`deployment.suite/test`, name `assertion 1: contains '30 days'` or the assertion's
`description`): the children of `any-of` / `all-of` follow their parent with paths like
`2.1`; a failed assertion's failure message is its detail. A child that failed under an
`any-of` that passed is not a failure (another alternative passed): its detail is in
`<system-out>`. A suite test that failed before any assertion ran (the provider's error:
no assertions recorded) is one testcase with that failure.

Pure: reads the rows of `reports.runs` (`run_row`, `result_row`) and, to name assertions
by what they check, the suites' definitions by `name@version` (without one, an assertion
is named by its type).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelcert.reports.formats import _short, _xml

LABEL_LIMIT = 100  # characters of an assertion's name (its description or what it checks)
_QUOTED = ("contains", "icontains", "not-contains", "equals", "starts-with")
_LIMITS = ("max-latency-ms", "max-ttft-ms", "max-output-tokens", "min-output-tokens")


def usd(value: float | None) -> str:
    """`$0.000412`, or `unknown` when no price was known."""
    return "unknown" if value is None else f"${value:.6f}"


def _seconds(ms: Any) -> str:
    return f"{(ms or 0) / 1000:.3f}"


def _clip(text: str, limit: int = LABEL_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def what_it_checks(assertion: Mapping[str, Any]) -> str:
    """An assertion of a suite's definition in a few words: `contains '30 days'`,
    `regex /\\b30\\b/i`, `tool-call lookup_order`, `max-latency-ms 5000`, `any-of`."""
    kind = str(assertion.get("type", "?"))
    value = assertion.get("value")
    if kind in _QUOTED and isinstance(value, str):
        return f"{kind} {value!r}"
    if kind == "regex" and isinstance(value, str):
        return f"regex /{value}/{assertion.get('flags') or ''}"
    if kind in _LIMITS and value is not None:
        return f"{kind} {value}"
    if kind == "tool-call" and assertion.get("name"):
        return f"tool-call {assertion['name']}"
    if kind == "llm-judge" and assertion.get("judge"):
        return f"llm-judge by {assertion['judge']}"
    return kind


@dataclass(frozen=True)
class FlatAssertion:
    """One assertion's outcome in a test's flattened list."""

    path: str  # "2", "2.1"
    outcome: Mapping[str, Any]
    definition: Mapping[str, Any] | None  # the suite's assertion, when its definition is known
    counts: bool  # False: it failed, but an `any-of` above it passed

    @property
    def name(self) -> str:
        label = self.outcome.get("description") or (
            self.definition.get("description") if self.definition else None
        )
        if not label:
            label = (
                what_it_checks(self.definition)
                if self.definition is not None
                else str(self.outcome.get("type", "?"))
            )
        return f"assertion {self.path}: {_clip(str(label))}"

    @property
    def failed(self) -> bool:
        return not self.outcome.get("passed") and self.counts


def flatten(
    outcomes: Sequence[Mapping[str, Any]],
    definitions: Sequence[Mapping[str, Any]] | None = None,
    *,
    prefix: str = "",
    counts: bool = True,
) -> Iterator[FlatAssertion]:
    """Each outcome, then its children (depth first), with paths `1`, `2`, `2.1`…"""
    for index, outcome in enumerate(outcomes, start=1):
        definition = definitions[index - 1] if definitions and index <= len(definitions) else None
        if definition is not None and definition.get("type") != outcome.get("type"):
            definition = None  # another version's definition: name it by its type only
        path = f"{prefix}{index}"
        yield FlatAssertion(path, outcome, definition, counts)
        children = outcome.get("children")
        if isinstance(children, list) and children:
            child_definitions = definition.get("assert") if definition is not None else None
            # Under an any-of that passed, a failed alternative does not fail anything.
            spared = outcome.get("type") == "any-of" and bool(outcome.get("passed"))
            yield from flatten(
                children,
                child_definitions if isinstance(child_definitions, list) else None,
                prefix=f"{path}.",
                counts=counts and not spared,
            )


def _suite_assertions(
    test: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]] | None:
    """The assertions the suite's definition gives the test, if the definition is known."""
    definition = definitions.get(str(test.get("suite")))
    if not definition:
        return None
    own_id = str(test["test_id"]).split("/", 1)[-1]
    for candidate in definition.get("tests") or ():
        if candidate.get("id") == own_id:
            found = candidate.get("assert")
            return found if isinstance(found, list) else None
    return None


def _judge_text(outcome: Mapping[str, Any]) -> str:
    lines = [str(outcome.get("detail") or "")]
    if outcome.get("type") == "llm-judge":
        lines.append(f"judge: {outcome.get('judge') or '?'}, score: {outcome.get('score')}")
        if outcome.get("reasoning"):
            lines.append(f"reasoning: {outcome['reasoning']}")
    return "\n".join(line for line in lines if line)


class _Counts:
    def __init__(self) -> None:
        self.tests = self.failures = self.skipped = 0


def _case(
    parent: ET.Element, counts: _Counts, classname: str, name: str, *, time: str
) -> ET.Element:
    counts.tests += 1
    return ET.SubElement(parent, "testcase", classname=_xml(classname), name=_xml(name), time=time)


def _fail(case: ET.Element, counts: _Counts, message: str, kind: str, text: str) -> None:
    counts.failures += 1
    failure = ET.SubElement(case, "failure", message=_xml(_short(message)), type=_xml(kind))
    failure.text = _xml(text)


def _skip(case: ET.Element, counts: _Counts, message: str) -> None:
    counts.skipped += 1
    ET.SubElement(case, "skipped", message=_xml(_short(message)))


def _builtin_case(
    suite: ET.Element, counts: _Counts, deployment: str, test: Mapping[str, Any]
) -> None:
    duration = _seconds(test.get("duration_ms"))
    case = _case(suite, counts, deployment, str(test["test_id"]), time=duration)
    outcome = test.get("outcome")
    if outcome == "FAILED":
        category = test.get("error_category") or "FAILED"
        message = test.get("error_message") or test.get("detail") or "failed"
        _fail(case, counts, f"{category}: {message}", str(category), str(message))
    elif outcome in ("SKIPPED", "NOT_RUN"):
        _skip(case, counts, str(test.get("detail") or outcome))


def _suite_cases(
    suite: ET.Element,
    counts: _Counts,
    deployment: str,
    test: Mapping[str, Any],
    definitions: Mapping[str, Mapping[str, Any]],
) -> None:
    classname = f"{deployment}.{test['test_id']}"
    outcome = test.get("outcome")
    assertions = test.get("assertions")
    duration = _seconds(test.get("duration_ms"))
    if outcome in ("SKIPPED", "NOT_RUN"):
        case = _case(suite, counts, classname, f"{test['test_id']}: not run", time=duration)
        _skip(case, counts, str(test.get("detail") or outcome))
        return
    if not assertions:
        # The test failed before any assertion ran: the provider's error, classified.
        case = _case(suite, counts, classname, f"{test['test_id']}: no answer", time=duration)
        if outcome != "PASSED":
            category = test.get("error_category") or "FAILED"
            message = test.get("error_message") or test.get("detail") or "failed"
            _fail(case, counts, f"{category}: {message}", str(category), str(message))
        return
    for index, flat in enumerate(flatten(assertions, _suite_assertions(test, definitions))):
        # The test's time on its first assertion, so that a CI's sums stay right.
        case = _case(suite, counts, classname, flat.name, time=duration if index == 0 else "0.000")
        detail = str(flat.outcome.get("detail") or "")
        kind = str(flat.outcome.get("type") or "assertion")
        if flat.failed:
            _fail(case, counts, detail or f"{kind} failed", kind, _judge_text(flat.outcome))
        elif not flat.outcome.get("passed"):
            ET.SubElement(case, "system-out").text = _xml(
                f"did not pass, but another alternative of its any-of did: {detail}"
            )
        elif kind == "llm-judge":
            ET.SubElement(case, "system-out").text = _xml(_judge_text(flat.outcome))


def _run_suite(
    root: ET.Element,
    run: Mapping[str, Any],
    tests: Sequence[Mapping[str, Any]],
    definitions: Mapping[str, Mapping[str, Any]],
) -> _Counts:
    deployment = str(run["deployment"])
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_xml(f"{deployment} @ {run['region']} · run {run['run_id']}"),
        timestamp=_xml(run.get("started_at") or ""),
        time=_seconds(run.get("duration_ms")),
    )
    properties = ET.SubElement(suite, "properties")
    shown = {
        "run_id": str(run["run_id"]),
        "status": str(run.get("status") or ""),
        "rating": "" if run.get("rating") is None else f"{run['rating']} {run.get('badge')}",
        "suites": ", ".join(run.get("suites") or ()),
        "simulated": str(bool(run.get("simulated"))).lower(),
        "cost_usd": "unknown" if run.get("cost_usd") is None else f"{run['cost_usd']:.6f}",
    }
    for name, value in shown.items():
        ET.SubElement(properties, "property", name=name, value=_xml(value))
    counts = _Counts()
    for test in tests:
        if test.get("suite"):
            _suite_cases(suite, counts, deployment, test, definitions)
        else:
            _builtin_case(suite, counts, deployment, test)
    if run.get("simulated"):
        ET.SubElement(
            suite, "system-out"
        ).text = "SIMULATION: results of the sim provider, not a real model"
    suite.set("tests", str(counts.tests))
    suite.set("failures", str(counts.failures))
    suite.set("errors", "0")
    suite.set("skipped", str(counts.skipped))
    return counts


def render_runs_junit(
    runs: Sequence[Mapping[str, Any]],
    tests: Sequence[Mapping[str, Any]],
    definitions: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """`runs` (rows of `reports.runs.run_row`) with their `tests` (`result_row`, any
    order within a run: `position` orders them) as one JUnit document. `definitions`:
    suite definitions by `name@version`, to name assertions by what they check."""
    by_run: dict[Any, list[Mapping[str, Any]]] = {run["run_id"]: [] for run in runs}
    for test in tests:
        by_run.setdefault(test["run_id"], []).append(test)
    root = ET.Element("testsuites", name="modelcert runs")
    total = _Counts()
    for run in runs:
        ordered = sorted(by_run[run["run_id"]], key=lambda t: t.get("position") or 0)
        counts = _run_suite(root, run, ordered, definitions or {})
        total.tests += counts.tests
        total.failures += counts.failures
        total.skipped += counts.skipped
    root.set("tests", str(total.tests))
    root.set("failures", str(total.failures))
    root.set("errors", "0")
    root.set("skipped", str(total.skipped))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
