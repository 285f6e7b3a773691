"""Structured logs: one JSON object a line for machines (MODELCERT_LOG_JSON=1), readable
lines for people. Worker events (active, completed, failed, stalled, error) also count
in the metrics."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from modelcert.obs import metrics

WORKER_EVENTS = frozenset({"active", "completed", "failed", "stalled", "error"})


def configure_logging(*, json_lines: bool, level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger (again: the last call wins)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s", force=True)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def log_event(event: str, **fields: Any) -> None:
    """Log one worker event; the five worker events also become metrics."""
    if event in WORKER_EVENTS:
        metrics.record_worker_event(event)
    level = "error" if event in ("error", "stalled") else "info"
    getattr(structlog.get_logger("modelcert"), level)(event, **fields)
