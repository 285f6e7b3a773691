"""`modelcert db` and `modelcert catalog`: the schema, providers and deployments
(added, listed, deactivated, reactivated, removed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from modelcert.cli.choices import InferenceType
from modelcert.cli.common import cli_actor, console, json_option, run, session_factory
from modelcert.errors import UserError

if TYPE_CHECKING:
    from modelcert.api.operations import Actor

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="Providers and deployments.", no_args_is_help=True)
sync_app = typer.Typer(help="Discover deployments from a provider.", no_args_is_help=True)
catalog_app.add_typer(sync_app, name="sync")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (idempotent)."""
    from modelcert.settings import get_settings
    from modelcert.store import db

    settings = get_settings()
    db.upgrade(db.make_engine(settings.database_url))
    console.print(f"schema up to date: {settings.database_url}")


@catalog_app.command("list")
def catalog_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List deployments with their provider and regions."""
    from modelcert.cli import render
    from modelcert.store import db, repo

    with db.transaction(session_factory()) as session:
        deployments = repo.list_deployments(session)
        if as_json:
            rows = [
                {
                    "id": d.id,
                    "provider": d.provider.slug,
                    "kind": d.provider.kind,
                    "provider_model_id": d.provider_model_id,
                    "model": d.model.name,
                    "vendor": d.model.vendor,
                    "inference_type": d.inference_type,
                    "regions": d.provider.regions,
                    "active": d.active,
                    "provider_active": d.provider.active,
                }
                for d in deployments
            ]
            print(json.dumps(rows, indent=2))
        else:
            console.print(render.catalog_table(deployments))


@catalog_app.command("add-provider")
def add_provider(
    slug: Annotated[str, typer.Argument(help="Unique short name, e.g. bedrock, openai, sim.")],
    kind: Annotated[
        str, typer.Option(help="sim | bedrock | openai | azure-openai | anthropic | gemini")
    ],
    name: Annotated[str | None, typer.Option()] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Endpoint base URL (openai, anthropic, gemini).")
    ] = None,
    region: Annotated[list[str] | None, typer.Option(help="Served region (repeat).")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="NAME of the env variable holding the API key.")
    ] = None,
    config: Annotated[str | None, typer.Option(help="Extra options as a JSON object.")] = None,
) -> None:
    """Add a provider. Secrets are never stored: give the name of an env variable."""
    from modelcert.secrets import check_env_name
    from modelcert.store import db, repo

    options = json_option(config, "config")
    if api_key_env is not None:
        problem = check_env_name(api_key_env, "--api-key-env")
        if problem is not None:
            raise UserError(problem[1], field="api_key_env")
        options["api_key_env"] = api_key_env
    with db.transaction(session_factory()) as session:
        provider = repo.add_provider(
            session,
            slug=slug,
            kind=kind,
            name=name,
            base_url=base_url,
            regions=region,
            config=options,
        )
        console.print(
            f"provider {provider.slug} ({provider.kind}) added, regions: "
            f"{', '.join(provider.regions)}"
        )


@catalog_app.command("add-deployment")
def add_deployment(
    provider: Annotated[str, typer.Option(help="Provider slug.")],
    model_id: Annotated[str, typer.Option(help="The provider's model id.")],
    name: Annotated[str | None, typer.Option(help="Base model name.")] = None,
    vendor: Annotated[str, typer.Option(help="Anthropic, Amazon, Cohere, Meta, …")] = "unknown",
    inference_type: Annotated[InferenceType, typer.Option()] = InferenceType.ON_DEMAND,
    capabilities: Annotated[
        str | None,
        typer.Option(
            help='JSON, e.g. {"tools": true, "json_output": true}, over the kind\'s defaults '
            "(anthropic, gemini: tools, JSON output, vision; other kinds: none of them)"
        ),
    ] = None,
    options: Annotated[str | None, typer.Option(help="Deployment options as JSON.")] = None,
    price_input: Annotated[
        float | None, typer.Option(help="Its own price: USD per 1M input tokens.")
    ] = None,
    price_output: Annotated[
        float | None, typer.Option(help="Its own price: USD per 1M output tokens.")
    ] = None,
    price_per_request: Annotated[
        float | None, typer.Option(help="A fee in USD per answered call.")
    ] = None,
) -> None:
    """Add a deployment of a model on a provider. Without a price of its own, the seed
    table's list price applies, if it has one (`modelcert price list`)."""
    from modelcert.certify.battery import default_capabilities
    from modelcert.cli.cost import checked_prices
    from modelcert.domain import Capabilities
    from modelcert.domain import InferenceType as DomainInferenceType
    from modelcert.store import db, repo

    declared = json_option(capabilities, "capabilities")
    prices = checked_prices(
        price_input, price_output, price_per_request, names=("--price-input", "--price-output")
    )
    with db.transaction(session_factory()) as session:
        kind = repo.get_provider(session, provider).kind
        try:
            caps = Capabilities.model_validate(
                {**default_capabilities(kind).model_dump(), **declared}
            )
        except ValueError as exc:
            raise UserError(f"capabilities: {exc}".splitlines()[0], field="capabilities") from exc
        deployment = repo.add_deployment(
            session,
            provider_slug=provider,
            provider_model_id=model_id,
            model_name=name,
            vendor=vendor,
            capabilities=caps,
            inference_type=DomainInferenceType(inference_type.value),
            options=json_option(options, "options"),
            cost_input_per_mtok=prices[0],
            cost_output_per_mtok=prices[1],
            cost_per_request=prices[2],
        )
        console.print(f"deployment {deployment.id} added: {provider}/{model_id}")


@sync_app.command("bedrock")
def sync_bedrock(
    region: Annotated[str, typer.Option(help="AWS region to discover.")],
    provider: Annotated[str, typer.Option(help="Provider slug of kind bedrock.")] = "bedrock",
    include_unentitled: Annotated[bool, typer.Option()] = False,
) -> None:
    """Discover Bedrock models in a region (ListFoundationModels + availability)."""
    from modelcert.catalog.sync import sync_bedrock_region

    factory = session_factory()
    added, skipped = run(lambda: sync_bedrock_region(factory, provider, region, include_unentitled))
    console.print(f"{len(added)} deployments added, {len(skipped)} already known or skipped")
    for line in added:
        console.print(f"  + {line}")


@sync_app.command("anthropic")
def sync_anthropic(
    provider: Annotated[str, typer.Option(help="Provider slug of kind anthropic.")] = "anthropic",
) -> None:
    """Add the models Anthropic's models list offers the provider's key."""
    _sync(provider, "global", "anthropic")


@sync_app.command("gemini")
def sync_gemini(
    provider: Annotated[str, typer.Option(help="Provider slug of kind gemini.")] = "gemini",
    region: Annotated[
        str, typer.Option(help="A Vertex AI location of the provider (the Gemini API: global).")
    ] = "global",
) -> None:
    """Add the Gemini models the Gemini API, or a Vertex AI location, lists."""
    _sync(provider, region, "gemini")


def _sync(provider: str, region: str, kind: str) -> None:
    from modelcert.catalog.sync import sync_region

    factory = session_factory()
    added, skipped = run(lambda: sync_region(factory, provider, region, False, kind=kind))
    console.print(f"{len(added)} deployments added, {len(skipped)} already known or skipped")
    for line in added:
        console.print(f"  + {line}")


def _actor() -> Actor:
    from modelcert.api.operations import Actor

    return Actor(cli_actor(), "cli")


def _one_of(deployment: str | None, provider: str | None) -> tuple[str | None, str | None]:
    from modelcert.cli.common import deployment_ref, validated
    from modelcert.validation import ProviderSlug

    if (deployment is None) == (provider is None):
        raise UserError("give one of --deployment or --provider", field="deployment")
    if deployment is not None:
        return deployment_ref(deployment), None
    assert provider is not None
    return None, validated(ProviderSlug, provider, "--provider")


def _set_active(deployment: str | None, provider: str | None, active: bool) -> None:
    from modelcert.api import operations

    ref, slug = _one_of(deployment, provider)
    actor = _actor()
    factory = session_factory()
    word = "reactivated" if active else "deactivated"
    if ref is not None:
        label, changed = operations.set_deployment_active(factory, actor, ref, active)
        what = f"deployment {label}"
    else:
        assert slug is not None
        changed = operations.set_provider_active(factory, actor, slug, active)
        what = f"provider {slug}"
    if not changed:
        console.print(f"{what} was already {'active' if active else 'deactivated'}")
        return
    if active:
        console.print(f"{what} {word}: it is queued and scheduled again")
    else:
        console.print(
            f"{what} {word}: it is no longer queued or scheduled (work already queued runs)"
        )


_DEPLOYMENT = Annotated[
    str | None, typer.Option(help="Deployment id or provider/model-id.", show_default=False)
]
_PROVIDER = Annotated[str | None, typer.Option(help="Provider slug.", show_default=False)]


@catalog_app.command("deactivate")
def catalog_deactivate(deployment: _DEPLOYMENT = None, provider: _PROVIDER = None) -> None:
    """Stop queuing and scheduling a deployment, or every deployment of a provider (its
    history stays; `catalog activate` undoes it). Recorded in the audit log."""
    _set_active(deployment, provider, False)


@catalog_app.command("activate")
def catalog_activate(deployment: _DEPLOYMENT = None, provider: _PROVIDER = None) -> None:
    """Reactivate a deployment or a provider. Recorded in the audit log."""
    _set_active(deployment, provider, True)


@catalog_app.command("remove-deployment")
def catalog_remove(
    deployment: Annotated[str, typer.Argument(help="Deployment id or provider/model-id.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete it, with its whole history.")
    ] = False,
) -> None:
    """Delete a deployment with its certifications, runs and test results (refused while
    it has queued or running work). Recorded in the audit log."""
    from modelcert.api import operations
    from modelcert.cli.common import deployment_ref

    ref = deployment_ref(deployment, "DEPLOYMENT")
    if not yes:
        raise UserError(
            f"removing {ref} deletes its whole history: add --yes, or `catalog deactivate` it",
            field="yes",
        )
    label = operations.remove_deployment(session_factory(), _actor(), ref)
    console.print(f"deployment {label} removed, with its history")


@catalog_app.command("remove-provider")
def catalog_remove_provider(
    provider: Annotated[str, typer.Argument(help="Provider slug.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete it, its deployments and their history.")
    ] = False,
) -> None:
    """Delete a provider with its deployments and their whole history (refused while one
    has queued or running work). Recorded in the audit log."""
    from modelcert.api import operations
    from modelcert.cli.common import validated
    from modelcert.validation import ProviderSlug

    slug = validated(ProviderSlug, provider, "PROVIDER")
    if not yes:
        raise UserError(
            f"removing provider {slug} deletes its deployments and their whole history: add "
            "--yes, or `catalog deactivate --provider` it",
            field="yes",
        )
    count = operations.remove_provider(session_factory(), _actor(), slug)
    console.print(f"provider {slug} removed, with its {count} deployment(s) and their history")
