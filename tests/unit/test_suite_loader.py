"""Suite files: what a malformed one reports (file, line, field, a readable message),
what a valid one normalises to, and when its version changes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from modelcert.certify.suite_assertions import ASSERTION_TYPES
from modelcert.errors import UserError
from modelcert.suites import (
    SuiteFileError,
    SuiteProblem,
    load_suite_file,
    parse_suite,
    suite_schema,
    suite_version,
)

EXAMPLE = """\
# yaml-language-server: $schema=suite.schema.json
name: support-bot            # a comment
description: What our support assistant relies on.
attach:
  all: false
  providers: [bedrock-prod]
  deployments: [bedrock-prod/anthropic.claude-3-haiku-20240307-v1:0]
builtin: keep
defaults:
  temperature: 0
  max_tokens: 200
  timeout_s: 30
tests:
  - id: refund-policy
    title: States the refund window
    weight: 2
    required: true
    requires: [tools]
    messages:
      - system: You are the support assistant of Acme.
      - user: How many days do I have to ask for a refund?
      - assistant: Which order?
      - user: Order 42.
    max_tokens: 100
    stop: ["\\n\\n"]
    tools:
      - name: lookup_order
        description: Look up an order
        parameters: {type: object, properties: {order_id: {type: string}}, required: [order_id]}
    response_format: {type: json_schema, schema: {type: object}}
    assert:
      - type: contains
        value: "30 days"
        description: names the window
      - {type: regex, value: "\\\\b30\\\\b", flags: "si"}
      - {type: tool-call, name: lookup_order}
      - type: any-of
        assert: [{type: contains, value: "30"}, {type: max-latency-ms, value: 5000}]
      - type: llm-judge
        judge: openai-prod/gpt-4o-mini@us-east-1
        rubric: The answer states that refunds are accepted within 30 days.
  - id: plain
    prompt: Say OK.
    response_format: {type: json}
    assert: [{type: equals, value: OK}]
"""


def problems(text: str) -> list[SuiteProblem]:
    with pytest.raises(SuiteFileError) as caught:
        parse_suite(text, "s.yaml")
    return caught.value.problems


def found(text: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.field, p.message) for p in problems(text)]


def suite(tests: str, head: str = "name: s\n") -> str:
    """A suite whose `tests:` list is `tests` (dedented); `tests:` is on line 2."""
    return head + "tests:\n" + textwrap.indent(textwrap.dedent(tests), "  ")


# --- a valid suite -------------------------------------------------------------------


def test_the_example_normalises_as_documented() -> None:
    loaded = parse_suite(EXAMPLE, "support.yaml")
    definition = loaded.definition
    assert loaded.name == "support-bot"
    assert loaded.ref == f"support-bot@{loaded.version}"
    assert loaded.version == suite_version(definition)
    assert len(loaded.version) == 16
    assert loaded.source == EXAMPLE
    assert loaded.source_name == "support.yaml"
    assert definition["attach"] == {
        "all": False,
        "providers": ["bedrock-prod"],
        "deployments": ["bedrock-prod/anthropic.claude-3-haiku-20240307-v1:0"],
    }
    assert definition["builtin"] == "keep"
    first, second = definition["tests"]
    assert first["system"] == "You are the support assistant of Acme."
    assert first["messages"] == [
        {"role": "user", "content": "How many days do I have to ask for a refund?"},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": "Order 42."},
    ]
    assert first["weight"] == 2.0
    assert first["required"] is True
    assert first["requires"] == ["tools"]
    assert first["timeout_s"] == 30.0  # from defaults
    assert first["params"] == {
        "temperature": 0.0,  # from defaults
        "max_tokens": 100,  # the test's own beats the default
        "stop": ["\n\n"],
        "tools": [
            {
                "name": "lookup_order",
                "description": "Look up an order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
            }
        ],
        "json_schema": {"type": "object"},
    }
    assert first["assert"] == [
        {"type": "contains", "value": "30 days", "description": "names the window"},
        {"type": "regex", "value": "\\b30\\b", "flags": "is"},
        {"type": "tool-call", "name": "lookup_order", "arguments": None},
        {
            "type": "any-of",
            "assert": [
                {"type": "contains", "value": "30"},
                {"type": "max-latency-ms", "value": 5000.0},
            ],
        },
        {
            "type": "llm-judge",
            "judge": "openai-prod/gpt-4o-mini@us-east-1",
            "rubric": "The answer states that refunds are accepted within 30 days.",
            "threshold": 0.5,
        },
    ]
    assert second == {
        "id": "plain",
        "title": "plain",
        "weight": 1.0,
        "required": False,
        "requires": [],
        "system": None,
        "messages": [{"role": "user", "content": "Say OK."}],
        "params": {"temperature": 0.0, "max_tokens": 200, "json": True},
        "timeout_s": 30.0,
        "assert": [{"type": "equals", "value": "OK"}],
    }
    json.dumps(definition, allow_nan=False)  # JSON-able, as stored


def test_a_minimal_suite_gets_every_default() -> None:
    loaded = parse_suite("name: tiny\ntests:\n  - {id: a, prompt: hi, assert: [{type: is-json}]}\n")
    assert loaded.description is None
    assert loaded.definition["attach"] == {"all": False, "providers": [], "deployments": []}
    assert loaded.definition["builtin"] == "keep"
    (test,) = loaded.definition["tests"]
    assert test["params"] == {}
    assert test["timeout_s"] is None


def test_tool_defaults_and_dates_stay_text() -> None:
    loaded = parse_suite(
        suite("""\
        - id: a
          prompt: "What happened on 2024-05-01?"
          tools: [{name: t}]
          assert: [{type: contains, value: 2024-05-01}, {type: tool-call, name: t}]
        """)
    )
    (test,) = loaded.definition["tests"]
    assert test["params"]["tools"] == [
        {"name": "t", "description": "", "parameters": {"type": "object", "properties": {}}}
    ]
    assert test["assert"][0]["value"] == "2024-05-01"  # not a datetime.date


def test_version_ignores_comments_key_order_and_layout() -> None:
    one = parse_suite("name: v\ntests:\n  - {id: a, prompt: hi, assert: [{type: is-json}]}\n")
    other = parse_suite(
        "# a comment\ntests:\n  - assert:\n      - type: is-json   # still\n"
        "    prompt: hi\n    id: a\nname: v\n"
    )
    assert one.version == other.version
    assert one.definition == other.definition


def test_version_ignores_what_normalises_to_the_same() -> None:
    base = "name: v\ntests:\n  - {id: a, prompt: hi, temperature: 0, assert: [{type: is-json}]}\n"
    spelled = (
        "name: v\nattach: {all: false}\nbuiltin: keep\n"
        "tests:\n  - id: a\n    title: a\n    weight: 1.0\n    messages: [{user: hi}]\n"
        "    temperature: 0.0\n    assert: [{type: is-json}]\n"
    )
    via_defaults = (
        "name: v\ndefaults: {temperature: 0}\n"
        "tests:\n  - {id: a, prompt: hi, assert: [{type: is-json}]}\n"
    )
    versions = {parse_suite(text).version for text in (base, spelled, via_defaults)}
    assert len(versions) == 1


@pytest.mark.parametrize(
    "change",
    [
        ("prompt: hi", "prompt: hi!"),
        ("temperature: 0", "temperature: 0.5"),
        ("{type: is-json}", "{type: is-json, description: d}"),
        ("name: v", "name: w"),
        ("id: a", "id: b"),
    ],
)
def test_version_changes_with_the_content(change: tuple[str, str]) -> None:
    base = "name: v\ntests:\n  - {id: a, prompt: hi, temperature: 0, assert: [{type: is-json}]}\n"
    changed = base.replace(*change)
    assert changed != base
    assert parse_suite(base).version != parse_suite(changed).version


def test_load_suite_file_reads_utf8_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = "name: fr\ntests:\n  - {id: a, prompt: «Bonjour», assert: [{type: is-json}]}\n"
    path.write_bytes(("\ufeff" + text).encode())
    loaded = load_suite_file(path)
    assert loaded.source_name == str(path)
    assert loaded.definition["tests"][0]["messages"][0]["content"] == "«Bonjour»"


# --- the file as a whole -------------------------------------------------------------


def test_unreadable_files_are_suite_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SuiteFileError) as caught:
        load_suite_file(tmp_path / "missing.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'missing.yaml'}: cannot read the file")
    assert isinstance(caught.value, UserError)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SuiteFileError, match="not UTF-8"):
        load_suite_file(binary)


def test_files_over_one_megabyte_are_refused(tmp_path: Path) -> None:
    big = "name: big\n# " + "x" * 1_000_001 + "\n"
    assert found(big) == [(None, "", f"the file is larger than 1 MB ({len(big)} bytes)")]
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(SuiteFileError, match="larger than 1 MB"):
        load_suite_file(path)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "the file is empty"),
        ("# only a comment\n", None, "the file is empty"),
        ("- name: x\n", 1, "a suite is a mapping (name:, tests:, …), not a list"),
        ("\n\njust words\n", 3, "a suite is a mapping (name:, tests:, …), not plain text"),
        ("42\n", 1, "a suite is a mapping (name:, tests:, …), not a single value"),
    ],
)
def test_a_suite_is_a_mapping(text: str, line: int | None, message: str) -> None:
    assert found(text) == [(line, "", message)]


def test_yaml_syntax_errors_give_the_line_of_the_mark() -> None:
    ((line, field, message),) = found("name: s\ntests:\n  - id: a\n    prompt: [unclosed\n")
    assert line == 5  # where the parser found the flow sequence unterminated: the end
    assert field == ""
    assert message.startswith("invalid YAML: ")
    ((line, _, message),) = found("name: s\ntests:\n  - id: a\n\tprompt: tab\n")
    assert line == 4
    assert "tab" in message or "\\t" in message


def test_two_documents_are_refused() -> None:
    ((line, _, message),) = found("name: a\n---\nname: b\n")
    assert line == 2
    assert "single document" in message


def test_recursive_and_exploding_aliases_are_refused() -> None:
    assert found("a: &a [*a]\n") == [(1, "", "an alias refers to a node that contains it")]
    lines = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    for level in "bcdef":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    assert found("\n".join(lines) + "\n") == [
        (None, "", "the document expands to more than 250000 values")
    ]


def test_aliases_within_limits_are_fine() -> None:
    text = (
        "name: s\ntests:\n"
        "  - {id: a, prompt: hi, assert: &checks [{type: is-json}]}\n"
        "  - {id: b, prompt: ho, assert: *checks}\n"
    )
    tests = parse_suite(text).definition["tests"]
    assert tests[0]["assert"] == tests[1]["assert"] == [{"type": "is-json"}]


def test_duplicate_keys_are_problems_with_both_lines() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      prompt: ho
      assert:
        - type: is-json
          type: contains
    """)
    assert found(text) == [
        (5, "tests[0].prompt", "duplicate key (first at line 4)"),
        # The last one is what YAML keeps: a contains, which lacks its value.
        (7, "tests[0].assert[0].value", "required field is missing"),
        (8, "tests[0].assert[0].type", "duplicate key (first at line 7)"),
    ]


def test_a_merge_key_is_not_a_duplicate() -> None:
    text = (
        "name: s\nbase: &base {prompt: hi, assert: [{type: is-json}]}\n"
        "tests:\n  - {<<: *base, id: a, prompt: override}\n"
    )
    # `base` itself is an unknown top-level field, but the merge is no duplicate.
    assert found(text) == [
        (
            2,
            "base",
            "unknown field 'base' (expected one of: $schema, name, description, attach, "
            "builtin, defaults, tests)",
        )
    ]


def test_problem_and_error_strings() -> None:
    problem = SuiteProblem("s.yaml", 3, "tests[0].id", "required field is missing")
    assert str(problem) == "s.yaml:3: tests[0].id: required field is missing"
    assert str(SuiteProblem("s.yaml", None, "", "the file is empty")) == "s.yaml: the file is empty"
    error = SuiteFileError([problem, SuiteProblem("s.yaml", 9, "name", "bad")])
    assert error.message == str(problem) + "\ns.yaml:9: name: bad"
    assert error.field == "tests[0].id"


# --- fields, lines and messages ------------------------------------------------------


def test_unknown_assertion_type_is_one_focused_problem() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      assert:
        - {type: contains, value: x}
        - type: contians
          value: refund
    """)
    ((line, field, message),) = found(text)
    assert (line, field) == (7, "tests[0].assert[1]")
    assert message == (
        "unknown assertion type 'contians' (expected one of: " + ", ".join(ASSERTION_TYPES) + ")"
    )


def test_errors_inside_the_chosen_assertion_type_only() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      assert:
        - {type: contains}
        - {type: regex, value: x, flags: q}
        - {type: max-output-tokens, value: 2.5}
        - {type: llm-judge, judge: gpt-4o, rubric: r, threshold: 2}
        - {type: equals, value: 30}
        - {description: no type}
        - contains
        - {type: is-json, value: x}
    """)
    assert found(text) == [
        (6, "tests[0].assert[0].value", "required field is missing"),
        (
            7,
            "tests[0].assert[1].flags",
            "'q' is not valid: expected regular expression flags: any of i, m, s, x",
        ),
        (8, "tests[0].assert[2].value", "expected a whole number, got the number 2.5"),
        (
            9,
            "tests[0].assert[3].judge",
            "'gpt-4o' is not valid: expected a deployment as provider/model-id "
            "(optionally @region)",
        ),
        (9, "tests[0].assert[3].threshold", "must be ≤ 1 (got 2)"),
        (
            10,
            "tests[0].assert[4].value",
            "expected a string, got the integer 30 (quote it to make it a string)",
        ),
        (
            11,
            "tests[0].assert[5]",
            "the assertion has no `type` (expected one of: " + ", ".join(ASSERTION_TYPES) + ")",
        ),
        (
            12,
            "tests[0].assert[6]",
            "expected an assertion (a mapping with a `type`), got the string 'contains'",
        ),
        (
            13,
            "tests[0].assert[7].value",
            "unknown field 'value' (expected one of: type, description)",
        ),
    ]


def test_nested_combinators_report_the_inner_field() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      assert:
        - type: all-of
          assert:
            - type: any-of
              assert:
                - {type: contains, value: x}
                - {type: min-output-tokens, value: 0}
            - {type: any-of, assert: []}
    """)
    assert found(text) == [
        (11, "tests[0].assert[0].assert[0].assert[1].value", "must be ≥ 1 (got 0)"),
        (12, "tests[0].assert[0].assert[1].assert", "needs at least one assertion"),
    ]


def test_required_fields_point_at_their_mapping() -> None:
    text = "description: d\ntests:\n  - prompt: hi\n    title: t\n"
    assert found(text) == [
        (1, "name", "required field is missing"),
        (3, "tests[0].assert", "required field is missing"),
        (3, "tests[0].id", "required field is missing"),
    ]


def test_messages_or_prompt() -> None:
    text = suite("""\
    - id: a
      assert: [{type: is-json}]
    - id: b
      prompt: hi
      messages: [{user: hi}]
      assert: [{type: is-json}]
    """)
    assert found(text) == [
        (3, "tests[0]", "needs 'messages' or 'prompt'"),
        (5, "tests[1]", "'messages' and 'prompt' exclude each other: give one"),
    ]


def test_the_order_and_shape_of_messages() -> None:
    text = suite("""\
    - id: a
      messages:
        - user: hi
        - system: late
        - assistant: hello
      assert: [{type: is-json}]
    - id: b
      messages:
        - {user: hi, assistant: two in one}
        - usr: typo
        - user: ""
        - user: ok
      assert: [{type: is-json}]
    - id: c
      messages: []
      assert: [{type: is-json}]
    """)
    assert found(text) == [
        (6, "tests[0].messages[1]", "a system message must be the first message"),
        (
            7,
            "tests[0].messages[2]",
            "the last message must be a user turn (the one the model answers)",
        ),
        (
            11,
            "tests[1].messages[0]",
            "a message is one `system:`, `user:` or `assistant:` line, got user, assistant",
        ),
        (
            12,
            "tests[1].messages[1].usr",
            "unknown field 'usr' (expected one of: system, user, assistant)",
        ),
        (13, "tests[1].messages[2].user", "must not be empty"),
        (17, "tests[2].messages", "needs at least one message"),
    ]


def test_a_test_needs_an_assertion_and_a_suite_a_test() -> None:
    assert found(suite("- {id: a, prompt: hi, assert: []}\n")) == [
        (3, "tests[0].assert", "needs at least one assertion")
    ]
    assert found("name: s\ntests: []\n") == [(2, "tests", "needs at least one test")]
    assert found("name: s\ntests:\n") == [(2, "tests", "expected a list, got an empty value")]


def test_names_ids_and_reserved_names() -> None:
    text = "name: Support Bot\ntests:\n  - {id: A, prompt: hi, assert: [{type: is-json}]}\n"
    assert found(text) == [
        (
            1,
            "name",
            "'Support Bot' is not valid: expected lower-case letters, digits and '-', "
            "starting with a letter or digit, at most 40 characters",
        ),
        (
            3,
            "tests[0].id",
            "'A' is not valid: expected lower-case letters, digits and '-', starting with "
            "a letter or digit, at most 60 characters",
        ),
    ]
    for reserved in ("builtin", "smoke"):
        text = f"name: {reserved}\ntests:\n  - {{id: a, prompt: hi, assert: [{{type: is-json}}]}}\n"
        assert found(text) == [
            (1, "name", f"'{reserved}' is reserved (the built-in battery and its smoke subset)")
        ]


def test_duplicate_test_ids() -> None:
    text = suite("""\
    - {id: a, prompt: hi, assert: [{type: is-json}]}
    - {id: b, prompt: hi, assert: [{type: is-json}]}
    - {id: a, prompt: hi, assert: [{type: is-json}]}
    """)
    assert found(text) == [(5, "tests[2].id", "duplicate test id 'a' (also tests[0])")]


def test_request_parameters_are_checked() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      temperature: 3
      top_p: 0
      max_tokens: 0
      stop: [a, b, c, d, e]
      stream: "yes"
      timeout_s: -1
      requires: [tools, tools, telepathy]
      assert: [{type: is-json}]
    """)
    assert found(text) == [
        (5, "tests[0].temperature", "must be ≤ 2 (got 3)"),
        (6, "tests[0].top_p", "must be > 0 (got 0)"),
        (7, "tests[0].max_tokens", "must be ≥ 1 (got 0)"),
        (8, "tests[0].stop", "at most 4 stop sequences are allowed (got 5)"),
        (9, "tests[0].stream", "expected true or false, got the string 'yes'"),
        (10, "tests[0].timeout_s", "must be > 0 (got -1)"),
        (11, "tests[0].requires", "'tools' is listed twice"),
        (
            11,
            "tests[0].requires[2]",
            "'telepathy' is not one of: streaming, tools, json_output, vision, system_prompt, "
            "stop_sequences",
        ),
    ]


def test_schemas_in_a_suite_must_be_schemas() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      tools:
        - name: t
          parameters: {type: objekt}
        - name: t
      response_format: {type: json_schema, schema: {required: yes}}
      assert:
        - {type: json-schema, value: {type: [1]}}
        - type: tool-call
          name: t
          arguments: {properties: 3}
    """)
    assert [(line, field) for line, field, _ in found(text)] == [
        (7, "tests[0].tools[0].parameters"),
        (8, "tests[0].tools[1].name"),
        (9, "tests[0].response_format.schema"),
        (11, "tests[0].assert[0].value"),
        (14, "tests[0].assert[1].arguments"),
    ]
    messages = [message for _, _, message in found(text)]
    assert messages[0].startswith("not a valid JSON schema: 'objekt' is not valid")
    assert messages[1] == "tool 't' is defined twice"


def test_response_format_types() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      response_format: {type: json_schema}
      assert: [{type: is-json}]
    - id: b
      prompt: hi
      response_format: {type: xml}
      assert: [{type: is-json}]
    """)
    assert found(text) == [
        (5, "tests[0].response_format.schema", "required field is missing"),
        (
            9,
            "tests[1].response_format",
            "unknown response format type 'xml' (expected one of: json, json_schema)",
        ),
    ]


def test_regexes_must_compile() -> None:
    text = suite("- {id: a, prompt: hi, assert: [{type: regex, value: '(30'}]}\n")
    ((line, field, message),) = found(text)
    assert (line, field) == (3, "tests[0].assert[0].value")
    assert message.startswith("the regular expression does not compile: missing )")


def test_tool_call_must_name_an_offered_tool() -> None:
    text = suite(
        """\
    - {id: a, prompt: hi, assert: [{type: tool-call, name: lookup}]}
    - {id: b, prompt: hi, tools: [{name: own}], assert: [{type: tool-call, name: lookup_order}]}
    - {id: c, prompt: hi, assert: [{type: tool-call, name: lookup_order}]}
    """,
        head="name: s\ndefaults:\n  tools: [{name: lookup_order}]\n",
    )
    assert found(text) == [
        (5, "tests[0].assert[0].name", "the test offers no tool 'lookup' (tools: lookup_order)"),
        (6, "tests[1].assert[0].name", "the test offers no tool 'lookup_order' (tools: own)"),
    ]


def test_unknown_fields_everywhere() -> None:
    text = (
        "name: s\nnmae: typo\nattach: {everything: true}\ndefaults: {prompt: hi}\n"
        "tests:\n  - {id: a, prompt: hi, asert: [], assert: [{type: is-json}]}\n"
    )
    assert [(line, field) for line, field, _ in found(text)] == [
        (2, "nmae"),
        (3, "attach.everything"),
        (4, "defaults.prompt"),
        (6, "tests[0].asert"),
    ]


def test_values_json_cannot_hold() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      temperature: .nan
      assert: [{type: json-schema, value: {properties: {on: {type: boolean}}}}]
    """)
    assert found(text) == [
        (5, "tests[0].temperature", "nan is not a number JSON can hold"),
        (
            6,
            "tests[0].assert[0].value.properties.True",
            "the key True is not text (YAML reads yes/no/on/off as true/false and digits as "
            "numbers): quote it",
        ),
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = suite("""\
    - id: a
      prompt: hi
      assert: [{type: contians}]
    - id: a
      temperature: -1
      assert: [{type: regex, value: "["}]
    """)
    assert [field for _, field, _ in found(text)] == [
        "tests[0].assert[0]",
        "tests[1]",
        "tests[1].id",
        "tests[1].temperature",
        "tests[1].assert[0].value",
    ]


def test_the_schema_is_published_and_valid() -> None:
    schema = suite_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    branches = schema["$defs"]["assertion"]["oneOf"]
    assert tuple(b["properties"]["type"]["const"] for b in branches) == ASSERTION_TYPES


@pytest.mark.parametrize(
    ("written", "meant"),
    [("off", "off"), ('"off"', "off"), ("no", "off"), ("false", "off"), ("keep", "keep"),
     ("yes", "keep"), ("true", "keep")],
)  # fmt: skip
def test_builtin_off_means_off_though_yaml_reads_a_bare_off_as_false(
    written: str, meant: str
) -> None:
    text = (
        f"name: s\nbuiltin: {written}\n"
        "tests:\n  - id: t\n    prompt: Hi\n    assert: [{type: is-json}]\n"
    )
    assert parse_suite(text).definition["builtin"] == meant
