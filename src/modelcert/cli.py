"""The `modelcert` command line. Thin: parse, call one function, print. Errors a user
can cause print one line and exit with code 2."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelcert import auth, cli_jobs, render
from modelcert.certify.service import CertificationReport, certify
from modelcert.demo import DEMO_DEPLOYMENTS, DEMO_PROVIDER, DEMO_REGIONS, seed_demo_catalog
from modelcert.domain import Capabilities, InferenceType
from modelcert.errors import UserError
from modelcert.providers.registry import ProviderPool
from modelcert.settings import Settings, get_settings
from modelcert.store import db, repo

app = typer.Typer(
    help="Certify AI model deployments, per region, with live tests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="Providers and deployments.", no_args_is_help=True)
sync_app = typer.Typer(help="Discover deployments from a provider.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
catalog_app.add_typer(sync_app, name="sync")
apikey_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")

# Wide enough for the matrix when output is piped (rich falls back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
T = TypeVar("T")


def _engine(settings: Settings, *, migrate: bool = False) -> Engine:
    engine = db.make_engine(settings.database_url)
    if migrate:
        db.upgrade(engine)
    elif not db.is_current(engine):
        raise UserError(
            f"database {settings.database_url} has no schema yet: run `modelcert db upgrade`"
        )
    return engine


def _factory(*, migrate: bool = False) -> sessionmaker[Session]:
    return db.make_session_factory(_engine(get_settings(), migrate=migrate))


def _run(coroutine_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coroutine_fn())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (idempotent)."""
    settings = get_settings()
    db.upgrade(db.make_engine(settings.database_url))
    console.print(f"schema up to date: {settings.database_url}")


@catalog_app.command("list")
def catalog_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List deployments with their provider and regions."""
    with db.transaction(_factory()) as session:
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


def _json_option(value: str | None, field: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UserError(f"{field}: invalid JSON ({exc.msg})", field=field) from exc
    if not isinstance(parsed, dict):
        raise UserError(f"{field}: expected a JSON object", field=field)
    return parsed


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
    options = _json_option(config, "config")
    if api_key_env:
        options["api_key_env"] = api_key_env
    with db.transaction(_factory()) as session:
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
        caps = Capabilities.model_validate(_json_option(capabilities, "capabilities"))
    except ValueError as exc:
        raise UserError(f"capabilities: {exc}".splitlines()[0], field="capabilities") from exc
    with db.transaction(_factory()) as session:
        deployment = repo.add_deployment(
            session,
            provider_slug=provider,
            provider_model_id=model_id,
            model_name=name,
            vendor=vendor,
            capabilities=caps,
            inference_type=inference_type,
            options=_json_option(options, "options"),
        )
        console.print(f"deployment {deployment.id} added: {provider}/{model_id}")


@sync_app.command("bedrock")
def sync_bedrock(
    region: Annotated[str, typer.Option(help="AWS region to discover.")],
    provider: Annotated[str, typer.Option(help="Provider slug of kind bedrock.")] = "bedrock",
    include_unentitled: Annotated[bool, typer.Option()] = False,
) -> None:
    """Discover Bedrock models in a region (ListFoundationModels + availability)."""
    from modelcert.catalog_sync import sync_bedrock_region

    factory = _factory()
    added, skipped = _run(
        lambda: sync_bedrock_region(factory, provider, region, include_unentitled)
    )
    console.print(f"{len(added)} deployments added, {len(skipped)} already known or skipped")
    for line in added:
        console.print(f"  + {line}")


def _progress_printer(label: str, region: str) -> Callable[[int, int, Any], None]:
    def on_result(index: int, total: int, result: Any) -> None:
        console.print(
            f"[dim]{label} {region} [{index + 1}/{total}] {result.test_id}: "
            f"{result.outcome.value}[/]"
        )

    return on_result


@app.command("certify")
def certify_command(
    deployment: Annotated[str, typer.Option(help="Deployment id or provider/model-id.")],
    region: Annotated[str, typer.Option(help="Region to certify in.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run one certification in-process and print its tests and verdict."""
    settings = get_settings()
    factory = _factory()

    async def go() -> CertificationReport:
        pool = ProviderPool()
        try:
            callback = None if as_json else _progress_printer(deployment, region)
            return await certify(factory, settings, pool, deployment, region, on_result=callback)
        finally:
            await pool.aclose()

    report = _run(go)
    if as_json:
        print(json.dumps(render.report_json(report), indent=2))
    else:
        render.print_report(console, report)


@app.command("matrix")
def matrix(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the current certification of every deployment in every region."""
    with db.transaction(_factory()) as session:
        rows = repo.certifications(session)
        if as_json:
            print(json.dumps([render.certification_json(c) for c in rows], indent=2))
            return
        console.print(render.matrix_table(rows))
        if any(c.simulated for c in rows):
            console.print(render.SIMULATION_NOTE)


@app.command("report")
def report_command(
    fmt: Annotated[str, typer.Option("--format", help="json | markdown | junit")] = "markdown",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider (slug).")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this deployment.")] = None,
    since: Annotated[str, typer.Option(help="Changes since: 30m, 12h, 7d, 2w, a date.")] = "7d",
    require: Annotated[
        list[str] | None,
        typer.Option(help="MODEL@REGION that must be certified now (repeat); else exit 1."),
    ] = None,
) -> None:
    """Write the current certifications and recent changes as JSON, Markdown or JUnit XML;
    with --require, a CI gate."""
    from pathlib import Path

    from modelcert import reports
    from modelcert.store.models import utcnow

    if fmt not in reports.FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(reports.FORMATS)}")
    requirements = [reports.Requirement.parse(text) for text in require or []]
    filters = reports.ReportFilters(provider=provider, region=region, model=model, since=since)
    now = utcnow()
    with db.transaction(_factory()) as session:
        report = reports.build_report(session, filters, now)
        checked = reports.check_requirements(session, requirements, now)
    document = reports.render(report, fmt)
    if output is None:
        sys.stdout.write(document)
    else:
        try:
            Path(output).write_text(document, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--output: cannot write {output}: {exc.strerror}") from exc
        print(f"report written to {output}", file=sys.stderr)
    missing = [(requirement, entry) for requirement, entry in checked if not entry.valid]
    for requirement, entry in missing:
        print(f"not certified: {requirement}: {entry.reason}", file=sys.stderr)
    if missing:
        raise typer.Exit(1)
    if checked:
        print(f"certified: {', '.join(str(r) for r, _ in checked)}", file=sys.stderr)


@app.command("demo")
def demo(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    serve: Annotated[bool, typer.Option(help="Keep the API and workers running.")] = False,
    in_process: Annotated[
        bool, typer.Option(help="Certify in this process, without API and workers.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="With --in-process.")] = 16,
) -> None:
    """Certify the SIMULATED demo catalog in three regions and print the matrix."""
    if not in_process:
        from modelcert.demo_service import run_demo

        run_demo(get_settings(), console, workers=workers, port=port, serve=serve)
        return
    demo_in_process(concurrency)


def demo_in_process(concurrency: int) -> None:
    settings = get_settings()
    factory = _factory(migrate=True)
    with db.transaction(factory) as session:
        ids = seed_demo_catalog(session)
    pairs = [(i, r) for i in ids for r in DEMO_REGIONS]
    console.print(
        f"[bold]modelcert demo[/]: {len(DEMO_DEPLOYMENTS)} simulated deployments × "
        f"{len(DEMO_REGIONS)} regions = {len(pairs)} certifications "
        f"(provider '{DEMO_PROVIDER}', database {settings.database_url})"
    )
    started = time.perf_counter()

    async def go() -> None:
        pool = ProviderPool()
        limit = asyncio.Semaphore(concurrency)

        async def one(deployment_id: int, region: str) -> None:
            async with limit:
                report = await certify(factory, settings, pool, deployment_id, region)
            score = report.score
            console.print(
                f"  {report.plan.deployment_label:28} {region:15} "
                f"{render.styled(score.status.value)} {score.rating} "
                f"{score.badge.value} {score.error_category or ''}"
            )

        try:
            await asyncio.gather(*(one(i, r) for i, r in pairs))
        finally:
            await pool.aclose()

    _run(go)
    console.print(f"{len(pairs)} certifications in {time.perf_counter() - started:.1f} s")
    matrix(as_json=False)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="Unique name, e.g. the person or robot using it.")],
    role: Annotated[str, typer.Option(help="viewer | operator | admin")],
) -> None:
    """Create an API key and print it, once: only a hash of it is stored."""
    with db.transaction(_factory()) as session:
        key, plain = auth.create_api_key(session, name, role)
        label = f"{key.name} ({key.role})"
    # Printed after the commit: a key shown must exist. Only the key goes to stdout, so
    # that `KEY=$(modelcert apikey create …)` captures it alone.
    print(
        f"API key {label} created. Store it now (a secret manager, say): it is shown only "
        "this once and cannot be recovered.",
        file=sys.stderr,
    )
    print(plain)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "-"


@apikey_app.command("list")
def apikey_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List API keys: name, prefix, role, dates. Never the key or its hash."""
    with db.transaction(_factory()) as session:
        keys = auth.list_api_keys(session)
    if as_json:
        rows = [
            {
                "name": k.name,
                "prefix": f"{auth.KEY_TAG}{k.prefix}",
                "role": k.role,
                "created_at": k.created_at.isoformat(),
                "last_used_at": k.last_used_at and k.last_used_at.isoformat(),
                "revoked_at": k.revoked_at and k.revoked_at.isoformat(),
            }
            for k in keys
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "prefix", "role", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.name,
            f"{auth.KEY_TAG}{k.prefix}…",
            k.role,
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(name: Annotated[str, typer.Argument(help="Name of the key.")]) -> None:
    """Revoke an API key for good."""
    with db.transaction(_factory()) as session:
        key = auth.revoke_api_key(session, name)
        console.print(f"API key {key.name} revoked ({_when(key.revoked_at)})")


@app.command("api")
def api_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Requests need an API key."""
    import uvicorn

    from modelcert.api.app import create_app

    settings = get_settings()
    factory = _factory()  # refuses to start on a database without a schema
    uvicorn.run(
        create_app(settings, factory), host=host, port=port, log_level=settings.log_level.lower()
    )


app.command("enqueue")(cli_jobs.enqueue_command)
app.command("worker")(cli_jobs.worker_command)
app.command("up")(cli_jobs.up_command)
app.command("recertify-due")(cli_jobs.recertify_due_command)
app.add_typer(cli_jobs.jobs_app, name="jobs")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:  # a bad setting (environment or .env): name it, no traceback
        for problem in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in problem["loc"]) or exc.title
            message = problem["msg"].removeprefix("Value error, ")
            print(f"error: {where}: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
