"""`modelcert db` and `modelcert catalog`: the schema, providers and deployments."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from modelcert.cli import render
from modelcert.cli.common import console, json_option, run, session_factory
from modelcert.domain import Capabilities, InferenceType
from modelcert.errors import UserError
from modelcert.secrets import check_env_name
from modelcert.settings import get_settings
from modelcert.store import db, repo

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="Providers and deployments.", no_args_is_help=True)
sync_app = typer.Typer(help="Discover deployments from a provider.", no_args_is_help=True)
catalog_app.add_typer(sync_app, name="sync")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (idempotent)."""
    settings = get_settings()
    db.upgrade(db.make_engine(settings.database_url))
    console.print(f"schema up to date: {settings.database_url}")


@catalog_app.command("list")
def catalog_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List deployments with their provider and regions."""
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
                }
                for d in deployments
            ]
            print(json.dumps(rows, indent=2))
        else:
            console.print(render.catalog_table(deployments))


@catalog_app.command("add-provider")
def add_provider(
    slug: Annotated[str, typer.Argument(help="Unique short name, e.g. bedrock, openai, sim.")],
    kind: Annotated[str, typer.Option(help="sim | bedrock | openai | azure-openai")],
    name: Annotated[str | None, typer.Option()] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL.")] = None,
    region: Annotated[list[str] | None, typer.Option(help="Served region (repeat).")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="NAME of the env variable holding the API key.")
    ] = None,
    config: Annotated[str | None, typer.Option(help="Extra options as a JSON object.")] = None,
) -> None:
    """Add a provider. Secrets are never stored: give the name of an env variable."""
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
        str | None, typer.Option(help='JSON, e.g. {"tools": true, "json_output": true}')
    ] = None,
    options: Annotated[str | None, typer.Option(help="Deployment options as JSON.")] = None,
) -> None:
    """Add a deployment of a model on a provider."""
    try:
        caps = Capabilities.model_validate(json_option(capabilities, "capabilities"))
    except ValueError as exc:
        raise UserError(f"capabilities: {exc}".splitlines()[0], field="capabilities") from exc
    with db.transaction(session_factory()) as session:
        deployment = repo.add_deployment(
            session,
            provider_slug=provider,
            provider_model_id=model_id,
            model_name=name,
            vendor=vendor,
            capabilities=caps,
            inference_type=inference_type,
            options=json_option(options, "options"),
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
