"""Test suites over HTTP (`modelcert.suites`, stored by `store.suites`): load one (its
YAML as the body), list them, show one and its versions, remove one, and the JSON Schema
of a suite file. Loading and removing need the operator role and are in the audit log;
reading needs any key. A malformed suite is a 422 listing every problem with its line
and field, never a 500."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from modelcert.api.deps import CurrentKey, FactoryDep, OperatorKey
from modelcert.api.errors import BODY_ERRORS, ROLE_ERRORS, VIEWER_ERRORS, error_responses
from modelcert.api.schemas import ApiModel, ErrorResponse
from modelcert.errors import UserError
from modelcert.store import suites as store
from modelcert.store.db import transaction

router = APIRouter(prefix="/api", tags=["suites"])

NAME_PATTERN = "^[a-z0-9][a-z0-9-]{0,39}$"
SuiteName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=40, description="A suite.")]
VersionQuery = Annotated[
    str | None,
    Query(
        pattern="^[0-9a-f]{6,64}$",
        description="A version, or its first 6 or more hex characters (default: the current).",
    ),
]
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
SOURCE_NAME_MAX = 500


class AttachOut(ApiModel):
    all: bool
    providers: list[str]
    deployments: list[str]


class SuiteOut(ApiModel):
    name: str
    version: str = Field(description="The content hash of the normalised definition.")
    ref: str = Field(description="`name@version`, as a run records it.")
    description: str | None
    tests: int
    attach: AttachOut
    attach_summary: str
    builtin: str = Field(description="keep or off: the built-in battery where it attaches.")
    current: bool
    active: bool = Field(description="False once removed.")
    source_name: str | None
    loaded_by: str | None
    loaded_at: datetime


class SuiteTestOut(ApiModel):
    id: str
    title: str
    weight: float
    required: bool
    requires: list[str]
    assertions: list[str] = Field(description="Assertion types, `any-of(contains, regex)`.")


class SuiteDetailOut(SuiteOut):
    test_list: list[SuiteTestOut]
    definition: dict[str, Any] = Field(description="The normalised definition, as run.")
    source: str = Field(description="The YAML as loaded.")


class LoadedOut(SuiteOut):
    created: bool = Field(description="False when this version was loaded before.")


class SuiteProblemOut(ApiModel):
    line: int | None
    field: str
    message: str


class SuiteErrorResponse(ErrorResponse):
    """422: the suite is malformed; every problem, with its line and field."""

    problems: list[SuiteProblemOut] = []


class SuiteRemovedOut(ApiModel):
    name: str
    removed: bool = Field(description="False when it was removed already.")


SuiteLoadBody = {
    "required": True,
    "content": {
        "application/yaml": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["source"],
                "properties": {
                    "source": {"type": "string", "description": "The suite's YAML."},
                    "sourceName": {"type": "string", "maxLength": SOURCE_NAME_MAX},
                },
                "additionalProperties": False,
            }
        },
    },
}


def _problems_response(exc: UserError) -> JSONResponse:
    from modelcert.suites.loader import SuiteFileError

    problems = exc.problems if isinstance(exc, SuiteFileError) else []
    first = problems[0] if problems else None
    detail = str(first) if first is not None else exc.message
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more)"
    body = SuiteErrorResponse(
        detail=detail,
        field=(first.field or None) if first is not None else exc.field,
        problems=[SuiteProblemOut(line=p.line, field=p.field, message=p.message) for p in problems],
    )
    return JSONResponse(status_code=422, content=body.model_dump(by_alias=True))


def _body_error(message: str, field: str = "body") -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content=SuiteErrorResponse(
            detail=f"{field}: {message}", field=field, problems=[]
        ).model_dump(by_alias=True),
    )


def _source_of(raw: bytes, content_type: str) -> tuple[str, str] | JSONResponse:
    """(YAML text, source name) from the body, or the 422 saying what is wrong with it."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _body_error("not UTF-8 text")
    if content_type == "application/json":
        try:
            payload = json.loads(text)
        except ValueError:
            return _body_error("invalid JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("source"), str):
            return _body_error('expected {"source": "<the suite\'s YAML>"}', "source")
        unknown = sorted(set(payload) - {"source", "sourceName", "source_name"})
        if unknown:
            return _body_error(f"unknown field {unknown[0]!r}", unknown[0])
        name = payload.get("sourceName", payload.get("source_name")) or "<api>"
        if not isinstance(name, str) or len(name) > SOURCE_NAME_MAX:
            return _body_error(f"a string of at most {SOURCE_NAME_MAX} characters", "sourceName")
        return payload["source"], name
    if content_type in YAML_TYPES or not content_type:
        return text, "<api>"
    return _body_error(
        f"content type {content_type[:60]!r}: send the YAML as application/yaml or "
        'text/plain, or JSON {"source": …}',
        "Content-Type",
    )


@router.post(
    "/suites",
    response_model=LoadedOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": SuiteLoadBody},
    responses={
        200: {"model": LoadedOut, "description": "This version was loaded already."},
        **error_responses(400, *BODY_ERRORS, *ROLE_ERRORS),
        422: {"model": SuiteErrorResponse, "description": "The suite is malformed."},
    },
)
async def load_suite(
    request: Request, response: Response, key: OperatorKey, factory: FactoryDep
) -> Any:
    """Load a suite: its YAML as the body (`application/yaml` or `text/plain`), or JSON
    `{"source": "<yaml>", "sourceName": "support-bot.yaml"}`. 201 for a new version (made
    current), 200 when this version was loaded already (made current again if it was
    not). A malformed suite is a 422 with every problem (`line`, `field`, `message`)."""
    from modelcert.suites.loader import parse_suite

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    found = _source_of(await request.body(), content_type)
    if isinstance(found, JSONResponse):
        return found
    text, source_name = found
    try:
        loaded = await run_in_threadpool(parse_suite, text, source_name)
    except UserError as exc:
        return _problems_response(exc)

    def store_it() -> LoadedOut:
        with transaction(factory) as session:
            row, created = store.store_suite(session, loaded, loaded_by=key.name, interface="api")
            return LoadedOut.model_validate({**store.summary(row), "created": created})

    out = await run_in_threadpool(store_it)
    if not out.created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("/suites", response_model=list[SuiteOut], responses=error_responses(*VIEWER_ERRORS))
def list_suites(
    factory: FactoryDep,
    _viewer: CurrentKey,
    include_removed: Annotated[
        bool, Query(alias="includeRemoved", description="Removed suites too.")
    ] = False,
) -> list[SuiteOut]:
    """Every loaded suite's current version, by name."""
    with transaction(factory) as session:
        return [
            SuiteOut.model_validate(store.summary(row))
            for row in store.list_suites(session, include_removed=include_removed)
        ]


@router.get(
    "/suite.schema.json",
    response_model=dict[str, Any],
    responses=error_responses(*VIEWER_ERRORS),
)
def suite_schema(_viewer: CurrentKey) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a suite file, for editors
    (`modelcert suite schema` prints it too)."""
    from modelcert.suites.loader import suite_schema as schema

    return schema()


@router.get(
    "/suites/{name}",
    response_model=SuiteDetailOut,
    responses=error_responses(400, 404, 422, *VIEWER_ERRORS),
)
def show_suite(
    name: SuiteName, factory: FactoryDep, _viewer: CurrentKey, version: VersionQuery = None
) -> SuiteDetailOut:
    """One suite (a removed one too: `active` says): its current version, or `?version=`;
    each test with its assertions' types, weight and whether it is required; the
    definition and the YAML as loaded."""
    with transaction(factory) as session:
        return SuiteDetailOut.model_validate(
            store.detail(store.get_suite(session, name, version, include_removed=True))
        )


@router.get(
    "/suites/{name}/versions",
    response_model=list[SuiteOut],
    responses=error_responses(404, 422, *VIEWER_ERRORS),
)
def suite_versions(name: SuiteName, factory: FactoryDep, _viewer: CurrentKey) -> list[SuiteOut]:
    """Every version of a suite loaded, newest first (a run records `name@version`)."""
    with transaction(factory) as session:
        return [
            SuiteOut.model_validate(store.summary(row))
            for row in store.suite_versions(session, name)
        ]


@router.delete(
    "/suites/{name}",
    response_model=SuiteRemovedOut,
    responses=error_responses(404, 422, *ROLE_ERRORS),
)
def remove_suite(name: SuiteName, key: OperatorKey, factory: FactoryDep) -> SuiteRemovedOut:
    """Stop running a suite: every version inactive, kept for the runs that name them
    (load its file again to restore it)."""
    with transaction(factory) as session:
        removed = store.remove_suite(session, name, removed_by=key.name, interface="api")
    return SuiteRemovedOut(name=name, removed=removed > 0)
