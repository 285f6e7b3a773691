"""Structured logs: one JSON object a line for machines (MODELCERT_LOG_JSON=1), readable
lines for people. Worker events (active, completed, failed, stalled, error) also count
in the metrics."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from modelcert import secrets
from modelcert.obs import metrics

WORKER_EVENTS = frozenset({"active", "completed", "failed", "stalled", "error"})


# Loggers of this program: MODELCERT_LOG_LEVEL applies to these only.
OWN_LOGGERS = ("modelcert",)
# Everything else (botocore, urllib3, httpx, openai, dbos, sqlalchemy…) stays at WARNING
# at least: botocore at DEBUG logs signed headers and X-Amz-Security-Token. Raise one
# on purpose with MODELCERT_THIRD_PARTY_LOG_LEVELS="botocore=DEBUG,httpx=INFO".
THIRD_PARTY_FLOOR = logging.WARNING
THIRD_PARTY_LEVELS_ENV = "MODELCERT_THIRD_PARTY_LOG_LEVELS"


# The third-party loggers the last `configure_logging` call set a level on.
_raised: set[str] = set()


def third_party_levels(spec: str | None) -> dict[str, int]:
    """`name=LEVEL,name=LEVEL` as {logger name: level}; malformed items are ignored."""
    levels: dict[str, int] = {}
    names = logging.getLevelNamesMapping()
    for item in (spec or "").split(","):
        name, _, level = item.partition("=")
        name, level = name.strip(), level.strip().upper()
        if name and level in names and name not in OWN_LOGGERS:
            levels[name] = names[level]
    return levels


def use_colors(stream: Any) -> bool:
    """Colour codes only for a terminal: never into a file or a pipe (a worker's log
    file), and never with NO_COLOR set (https://no-color.org); FORCE_COLOR forces them."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # closed or detached
        return False


def configure_logging(
    *, json_lines: bool, level: str = "INFO", third_party: str | None = None
) -> None:
    """Configure structlog and the stdlib loggers (again: the last call wins).

    `level` is modelcert's own; third-party loggers stay at WARNING or above unless
    `third_party` (default: $MODELCERT_THIRD_PARTY_LOG_LEVELS) names them. Every record
    and every structlog event has its secrets masked (`modelcert.secrets`)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(
        stream=sys.stderr,
        level=max(numeric, THIRD_PARTY_FLOOR),
        format="%(message)s",
        force=True,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    if third_party is None:
        third_party = os.environ.get(THIRD_PARTY_LEVELS_ENV)
    chosen = third_party_levels(third_party)
    for name in _raised - chosen.keys():  # raised by an earlier call: back to the floor
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, value in chosen.items():
        logging.getLogger(name).setLevel(value)
    _raised.clear()
    _raised.update(chosen)
    secrets.install_log_redaction(_all_handlers())
    _quiet_cancellations(logging.getLogger("dbos"))
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=use_colors(sys.stderr))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            secrets.structlog_redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


# What DBOS logs as an ERROR with a traceback when a workflow it awaits was cancelled: a
# cancelled certification is an operator's decision, logged by the engine as an info
# event ("cancelled"), not a failure.
_CANCELLATIONS = frozenset({"DBOSAwaitedWorkflowCancelledError", "DBOSWorkflowCancelledError"})


class _CancellationIsNotAnError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or type(error).__name__ not in _CANCELLATIONS


def _quiet_cancellations(logger: logging.Logger) -> None:
    if not any(isinstance(f, _CancellationIsNotAnError) for f in logger.filters):
        logger.addFilter(_CancellationIsNotAnError())


def _all_handlers() -> list[logging.Handler]:
    """The handlers configured now: the root's and any library's own (e.g. DBOS')."""
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers += logger.handlers
    return handlers


def log_event(event: str, **fields: Any) -> None:
    """Log one worker event; the five worker events also become metrics."""
    if event in WORKER_EVENTS:
        metrics.record_worker_event(event)
    level = "error" if event in ("error", "stalled") else "info"
    getattr(structlog.get_logger("modelcert"), level)(event, **fields)
