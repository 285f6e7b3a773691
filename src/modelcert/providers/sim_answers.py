"""The simulator's answers: a small rule-based responder that behaves like a competent
chat model on the battery's kinds of request (counting, recall, system prompts, tools,
JSON), so that a healthy simulated deployment certifies. Pure and deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelcert.providers.base import ChatRequest

_TOKEN = re.compile(r"\S+\s*")
_GREETINGS = (
    "Hello! How can I help you today?",
    "Hi there! What can I do for you?",
    "Hello! I am a simulated assistant, happy to help.",
)
_HAIKUS = (
    "Grey waves fold and break,\nsalt wind carries gull voices,\nthe tide keeps its time.",
    "Moonlight on the swell,\na slow breath of the deep sea,\nfoam writes and forgets.",
)


@dataclass(frozen=True)
class SimAnswer:
    text: str
    tool_calls: tuple[tuple[str, str], ...]  # (name, JSON arguments)
    stop_reason: str
    input_tokens: int
    output_tokens: int


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _last_user(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def _value_for(name: str, schema: Mapping[str, Any], prompt: str) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "string":
        named = re.search(r"\bnamed ([A-Z][a-z]+)", prompt)
        place = re.search(r"\bin ([A-Z][a-z]+)", prompt)
        found = named if name == "name" else (place or named)
        return found.group(1) if found else "example"
    if kind == "integer":
        number = re.search(r"\b(\d+)\b", prompt)
        return int(number.group(1)) if number else 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return instance_of(schema, prompt)
    return None


def instance_of(schema: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """A JSON object satisfying a simple object schema, using values found in the prompt."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    return {name: _value_for(name, sub, prompt) for name, sub in properties.items()}


def _text_for(request: ChatRequest, pick: int) -> str:
    prompt = _last_user(request)
    lowered = prompt.lower()
    if request.system and "your name" in lowered:
        named = re.search(r"your name is (\w+)", request.system, re.IGNORECASE)
        if named:
            return named.group(1)
    if "my name" in lowered:
        for message in request.messages:
            told = re.search(r"my name is (\w+)", message.content, re.IGNORECASE)
            if told and message.role == "user":
                return f"Your name is {told.group(1)}."
    counting = re.search(r"count (?:from )?(\d+) to (\d+)", lowered)
    if counting:
        low, high = int(counting.group(1)), int(counting.group(2))
        return ", ".join(str(n) for n in range(low, high + 1))
    if counting is None and "count" in lowered:
        return "1, 2, 3, 4, 5"
    respond = re.search(r"respond with (\w+)", prompt, re.IGNORECASE)
    if respond:
        return respond.group(1)
    if "haiku" in lowered:
        return _HAIKUS[pick % len(_HAIKUS)]
    if "sentence" in lowered:
        return "The sea keeps moving, patient and wide, under a pale sky."
    return _GREETINGS[pick % len(_GREETINGS)]


def answer(request: ChatRequest, pick: int) -> SimAnswer:
    """The simulated model's answer to a request; `pick` varies the wording."""
    prompt = _last_user(request)
    input_tokens = sum(count_tokens(m.content) for m in request.messages)
    input_tokens += count_tokens(request.system or "")
    if request.tools:
        tool = request.tools[0]
        arguments = json.dumps(instance_of(tool.parameters, prompt))
        return SimAnswer(
            "", ((tool.name, arguments),), "tool_use", input_tokens, count_tokens(arguments)
        )
    if request.json_schema is not None:
        text = json.dumps(instance_of(request.json_schema, prompt))
    else:
        text = _text_for(request, pick)

    stop_reason = "end_turn"
    for stop in request.stop:
        cut = text.find(stop)
        if cut >= 0:
            text, stop_reason = text[:cut], "stop_sequence"
    tokens = split_tokens(text)
    if request.max_tokens is not None and len(tokens) > request.max_tokens:
        tokens, stop_reason = tokens[: request.max_tokens], "max_tokens"
    text = "".join(tokens)
    return SimAnswer(text, (), stop_reason, input_tokens, len(tokens))
