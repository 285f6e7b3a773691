"""capabilities_for: what catalog discovery can declare for a Bedrock model."""

from __future__ import annotations

import pytest

from modelcert.domain import Capabilities, InferenceType
from modelcert.providers.base import DiscoveredModel
from modelcert.providers.bedrock_families import (
    GEO_PREFIXES,
    base_model_id,
    capabilities_for,
    family_of,
)

TEXT = ("TEXT",)
TEXT_IMAGE = ("TEXT", "IMAGE")


def discovered(
    model_id: str, *, streaming: bool = True, inputs: tuple[str, ...] = TEXT
) -> DiscoveredModel:
    return DiscoveredModel(
        model_id=model_id,
        name=model_id,
        vendor="",
        streaming=streaming,
        inference_types=(InferenceType.ON_DEMAND,),
        input_modalities=inputs,
        output_modalities=TEXT,
    )


def caps(
    *,
    streaming: bool = True,
    tools: bool,
    json_output: bool,
    vision: bool = False,
    system_prompt: bool,
    stop_sequences: bool,
) -> Capabilities:
    return Capabilities(
        streaming=streaming,
        tools=tools,
        json_output=json_output,
        vision=vision,
        system_prompt=system_prompt,
        stop_sequences=stop_sequences,
    )


FULL = caps(tools=True, json_output=True, system_prompt=True, stop_sequences=True)
# Chat with a system prompt, no tool use.
CHAT = caps(tools=False, json_output=True, system_prompt=True, stop_sequences=True)
# No system prompt, hence no JSON by instruction either.
BARE = caps(tools=False, json_output=False, system_prompt=False, stop_sequences=True)
LLAMA = caps(tools=False, json_output=True, system_prompt=True, stop_sequences=False)
UNKNOWN = caps(tools=False, json_output=False, system_prompt=False, stop_sequences=False)


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("anthropic.claude-3-haiku-20240307-v1:0", FULL),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", FULL),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", FULL),
        ("anthropic.claude-3-7-sonnet-20250219-v1:0", FULL),
        ("anthropic.claude-sonnet-4-20250514-v1:0", FULL),
        ("anthropic.claude-opus-4-1-20250805-v1:0", FULL),
        ("anthropic.claude-v2:1", CHAT),
        ("anthropic.claude-instant-v1", CHAT),
        ("amazon.nova-micro-v1:0", FULL),
        ("amazon.nova-pro-v1:0", FULL),
        ("amazon.nova-premier-v1:0", FULL),
        ("amazon.titan-text-express-v1", BARE),
        ("amazon.titan-text-premier-v1:0", BARE),
        ("ai21.jamba-1-5-large-v1:0", FULL),
        ("ai21.jamba-instruct-v1:0", CHAT),
        ("ai21.j2-ultra-v1", BARE),
        ("cohere.command-text-v14", BARE),
        ("cohere.command-light-text-v14", BARE),
        ("meta.llama2-13b-chat-v1", LLAMA),
        ("meta.llama3-8b-instruct-v1:0", LLAMA),
        ("meta.llama3-2-1b-instruct-v1:0", LLAMA),
        ("meta.llama3-2-3b-instruct-v1:0", LLAMA),
        ("mistral.mistral-7b-instruct-v0:2", BARE),
        ("mistral.mixtral-8x7b-instruct-v0:1", BARE),
        ("deepseek.r1-v1:0", CHAT),
    ],
)
def test_known_families(model_id: str, expected: Capabilities) -> None:
    assert capabilities_for(discovered(model_id)) == expected


# Tool use through Converse only: the battery's tool test streams when the model does,
# so tools are declared only for a model that does not stream.
@pytest.mark.parametrize(
    "model_id",
    [
        "cohere.command-r-v1:0",
        "cohere.command-r-plus-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
        "meta.llama3-2-90b-instruct-v1:0",
        "meta.llama3-3-70b-instruct-v1:0",
        "meta.llama4-maverick-17b-instruct-v1:0",
        "mistral.mistral-large-2407-v1:0",
        "mistral.mistral-small-2402-v1:0",
        "writer.palmyra-x5-v1:0",
    ],
)
def test_tools_without_streaming_tool_use(model_id: str) -> None:
    streamed = capabilities_for(discovered(model_id, streaming=True))
    unstreamed = capabilities_for(discovered(model_id, streaming=False))
    assert (streamed.streaming, streamed.tools) == (True, False)
    assert (unstreamed.streaming, unstreamed.tools) == (False, True)
    assert streamed.system_prompt and streamed.json_output


def test_streaming_tool_use_keeps_tools_when_streaming() -> None:
    for streaming in (True, False):
        declared = capabilities_for(discovered("amazon.nova-lite-v1:0", streaming=streaming))
        assert (declared.streaming, declared.tools) == (streaming, True)


@pytest.mark.parametrize("prefix", GEO_PREFIXES)
@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "meta.llama3-2-11b-instruct-v1:0",
        "deepseek.r1-v1:0",
        "amazon.titan-text-lite-v1",
        "acme.unknown-model-v1:0",
    ],
)
def test_inference_profiles_map_like_their_base_id(prefix: str, model_id: str) -> None:
    for streaming in (True, False):
        assert capabilities_for(
            discovered(prefix + model_id, streaming=streaming, inputs=TEXT_IMAGE)
        ) == capabilities_for(discovered(model_id, streaming=streaming, inputs=TEXT_IMAGE))


@pytest.mark.parametrize(
    ("model_id", "base"),
    [
        ("us.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
        ("us-gov.meta.llama3-8b-instruct-v1:0", "meta.llama3-8b-instruct-v1:0"),
        (
            "Global.Anthropic.Claude-Sonnet-4-20250514-v1:0",
            "anthropic.claude-sonnet-4-20250514-v1:0",
        ),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0",
            "amazon.nova-pro-v1:0",
        ),
        (
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-pro-v1:0",
            "amazon.nova-pro-v1:0",
        ),
        # A provisioned model's ARN names no model: left as it is, so no family matches.
        (
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123",
        ),
    ],
)
def test_base_model_id(model_id: str, base: str) -> None:
    assert base_model_id(model_id) == base


def test_arn_of_a_foundation_model_maps_like_its_id() -> None:
    arn = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"
    assert capabilities_for(discovered(arn)) == FULL
    assert family_of("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/x") is None


@pytest.mark.parametrize(
    ("model_id", "inputs", "vision"),
    [
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", TEXT_IMAGE, True),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", TEXT, False),
        ("amazon.nova-lite-v1:0", ("TEXT", "IMAGE", "VIDEO"), True),
        ("meta.llama3-2-90b-instruct-v1:0", TEXT_IMAGE, True),
        ("meta.llama3-2-3b-instruct-v1:0", TEXT, False),
        ("acme.unknown-vlm-v1:0", ("text", "image"), True),  # modalities, any family
        ("acme.unknown-llm-v1:0", TEXT, False),
    ],
)
def test_vision_comes_from_the_input_modalities(
    model_id: str, inputs: tuple[str, ...], vision: bool
) -> None:
    assert capabilities_for(discovered(model_id, inputs=inputs)).vision is vision


@pytest.mark.parametrize(
    "model_id",
    [
        "acme.super-model-v1:0",
        "amazon.titan-embed-text-v2:0",  # an embedding model, not Titan Text
        "amazon.nova-canvas-v1:0",  # image generation
        "cohere.embed-english-v3",
        "mistral.unreleased-model-v1:0",
        "",
    ],
)
@pytest.mark.parametrize("streaming", [True, False])
def test_unknown_models_get_conservative_defaults(model_id: str, streaming: bool) -> None:
    assert family_of(model_id) is None
    declared = capabilities_for(discovered(model_id, streaming=streaming))
    assert declared == caps(
        streaming=streaming,
        tools=False,
        json_output=False,
        system_prompt=False,
        stop_sequences=False,
    )


def test_no_context_or_output_limits_are_guessed() -> None:
    declared = capabilities_for(discovered("anthropic.claude-3-haiku-20240307-v1:0"))
    assert (declared.max_context, declared.max_output) == (None, None)
