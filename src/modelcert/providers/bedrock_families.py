"""What a Bedrock model can be certified for, from what catalog discovery tells about it.

Pure: no I/O. ListFoundationModels reports streaming and modalities but nothing about
tool use, system prompts or stop sequences, so those come from the model family, read
from the model id. The family table follows AWS's "Supported models and model features"
table for the Converse API (columns System prompts, Tool use, Streaming tool use):
https://docs.aws.amazon.com/bedrock/latest/userguide/conversation-inference-supported-models-features.html
and, for stop sequences, each family's own request parameters: Meta Llama's request
(https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html) has
no stop field at all, so Converse has nothing to map stopSequences to.

A capability declared wrongly costs more than one left out: the test then runs, the
endpoint rejects the request and the deployment fails a test it should have skipped.
So the table declares only what the documentation says, and anything it does not know
gets the least: no tools, no JSON, no system prompt, no stop sequences.

- tools: the battery's tool test streams whenever the model streams, and several
  families support tool use only through Converse, not ConverseStream ("This model
  doesn't support tool use in streaming mode"). For them tools is declared only when
  discovery says the model does not stream.
- json_output: this adapter asks for JSON through the system prompt (`_JSON_INSTRUCTION`
  in bedrock_events), so it is declared for the chat families that accept one.
- vision: from IMAGE in the discovered input modalities, for any family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelcert.domain import Capabilities
from modelcert.providers.base import DiscoveredModel

# Prefixes of inference-profile ids ("us.anthropic.claude-..."): a profile id is served
# by the model of its base id. Also used by the provider to tell resolved ids apart.
GEO_PREFIXES = ("us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")
# ARN resources whose name is a model id (a provisioned-model ARN names no family).
_ARN_RESOURCES = ("foundation-model/", "inference-profile/")


@dataclass(frozen=True)
class Family:
    """What the Converse API accepts for one family of models."""

    name: str
    system_prompt: bool
    tools: bool = False
    streaming_tools: bool = False  # tool use through ConverseStream too
    stop_sequences: bool = True


def _family(
    pattern: str,
    name: str,
    *,
    system_prompt: bool,
    tools: bool = False,
    streaming_tools: bool = False,
    stop_sequences: bool = True,
) -> tuple[re.Pattern[str], Family]:
    return re.compile(pattern), Family(name, system_prompt, tools, streaming_tools, stop_sequences)


# Matched against the start of the base model id, first match wins: the more specific
# patterns (Llama 3.2 1B/3B, then Llama 3.1+) come before the broader ones that would
# catch them too.
_FAMILIES: tuple[tuple[re.Pattern[str], Family], ...] = (
    # Anthropic: Claude 3 and later (3, 3.5, 3.7, 4.x and the "claude-sonnet-4" naming).
    _family(
        r"anthropic\.claude-(?:3|(?:opus|sonnet|haiku)-\d)",
        "anthropic-claude-3+",
        system_prompt=True,
        tools=True,
        streaming_tools=True,
    ),
    _family(r"anthropic\.claude-(?:v2|instant)", "anthropic-claude-2", system_prompt=True),
    # Amazon: the Nova chat models (Canvas, Reel and Sonic are not Converse chat models).
    _family(
        r"amazon\.nova-(?:micro|lite|pro|premier)-",
        "amazon-nova",
        system_prompt=True,
        tools=True,
        streaming_tools=True,
    ),
    # Titan Text takes no system prompt through Converse.
    _family(r"amazon\.titan-(?:text|tg1)", "amazon-titan-text", system_prompt=False),
    _family(
        r"ai21\.jamba-1-5-",
        "ai21-jamba-1.5",
        system_prompt=True,
        tools=True,
        streaming_tools=True,
    ),
    _family(r"ai21\.jamba-instruct", "ai21-jamba-instruct", system_prompt=True),
    _family(r"ai21\.j2-", "ai21-jurassic-2", system_prompt=False),  # no chat support
    # Command R/R+: tool use, but not while streaming.
    _family(r"cohere\.command-r", "cohere-command-r", system_prompt=True, tools=True),
    _family(r"cohere\.command-(?:text|light)", "cohere-command", system_prompt=False),  # no chat
    # Meta: no stop sequences in any Llama request; Llama 3.1 and later (but the 3.2
    # 1B/3B) support tool use, not while streaming.
    _family(
        r"meta\.llama3-2-(?:1b|3b)-",
        "meta-llama-3.2-small",
        system_prompt=True,
        stop_sequences=False,
    ),
    _family(
        r"meta\.llama(?:3-[123]-|4-)",
        "meta-llama-3.1+",
        system_prompt=True,
        tools=True,
        stop_sequences=False,
    ),
    _family(r"meta\.llama[23]-", "meta-llama-2/3", system_prompt=True, stop_sequences=False),
    # Mistral AI: the Instruct models (7B, Mixtral) take no system prompt; Large, Small
    # and Pixtral Large support tool use, not while streaming.
    _family(r"mistral\.(?:mistral-7b|mixtral-)", "mistral-instruct", system_prompt=False),
    _family(
        r"mistral\.(?:mistral-large|mistral-small|pixtral-large)",
        "mistral-large/small",
        system_prompt=True,
        tools=True,
    ),
    _family(r"deepseek\.r1", "deepseek-r1", system_prompt=True),  # no tool use
    # Writer: stop sequences not checked against the documentation, so not declared;
    # streaming tool use neither.
    _family(
        r"writer\.palmyra-x",
        "writer-palmyra-x",
        system_prompt=True,
        tools=True,
        stop_sequences=False,
    ),
)


def base_model_id(model_id: str) -> str:
    """The foundation-model id behind `model_id`: without geo prefix or ARN, lower case."""
    base = model_id.strip().lower()
    if base.startswith("arn:"):
        for resource in _ARN_RESOURCES:
            index = base.find(resource)
            if index >= 0:
                base = base[index + len(resource) :]
                break
    for prefix in GEO_PREFIXES:
        if base.startswith(prefix):
            return base[len(prefix) :]
    return base


def family_of(model_id: str) -> Family | None:
    """The known family of `model_id`, None when the table does not know it."""
    base = base_model_id(model_id)
    for pattern, family in _FAMILIES:
        if pattern.match(base):
            return family
    return None


def capabilities_for(model: DiscoveredModel) -> Capabilities:
    """The capabilities to declare for a discovered model (see the module docstring)."""
    vision = any(modality.upper() == "IMAGE" for modality in model.input_modalities)
    family = family_of(model.model_id)
    if family is None:
        return Capabilities(
            streaming=model.streaming,
            tools=False,
            json_output=False,
            vision=vision,
            system_prompt=False,
            stop_sequences=False,
        )
    return Capabilities(
        streaming=model.streaming,
        tools=family.tools and (family.streaming_tools or not model.streaming),
        json_output=family.system_prompt,
        vision=vision,
        system_prompt=family.system_prompt,
        stop_sequences=family.stop_sequences,
    )
