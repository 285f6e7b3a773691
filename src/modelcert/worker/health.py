"""The worker's health HTTP server: /live, /ready, /health and /metrics.

It runs stdlib `ThreadingHTTPServer` in a daemon thread rather than inside the worker's
asyncio loop: a health endpoint served by the loop it watches goes silent exactly when the
loop is blocked, and probes then see timeouts instead of a 503 that says why. A thread
also needs no extra dependency and keeps working while the loop drains on SIGTERM.

Unlike the old /health (healthy even with the database down: DOMAIN §6), every answer
comes from real checks: a `SELECT 1` through the worker's engine, the age of the last
heartbeat write and the age of the queue loop's last poll.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import Engine, text

from modelcert.certify.throttle import QuotaKey
from modelcert.errors import UserError
from modelcert.obs import metrics
from modelcert.settings import get_settings

log = logging.getLogger(__name__)

DbCheck = Callable[[], None]


@dataclass
class WorkerState:
    """What the worker tells the health server; the worker updates it in place."""

    executor_id: str
    regions: tuple[str, ...]
    concurrency: int
    started_at: float  # time.time()
    last_heartbeat: float | None  # time.time() of the last successful heartbeat write
    last_queue_poll: float | None  # time.time() the queue loop last polled
    in_flight: dict[str, dict[str, Any]] = field(default_factory=dict)
    shutting_down: bool = False
    # provider quota -> call starts per second its throttle gate paces at, None when not
    # paced (certify/throttle.py): what a 429-limited quota currently allows.
    pacing: Callable[[], dict[QuotaKey, float | None]] | None = None


def database_check(engine: Engine) -> DbCheck:
    """A `db_check` running `SELECT 1` on `engine` (raises when the database is unusable)."""

    def check() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return check


# `scheme://user:password@` in URLs and `password=…` in DSNs: driver errors may echo them.
_SECRETS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@|(password\s*=\s*)\S+", re.IGNORECASE)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a failed check."""
    # SQLAlchemy wraps the driver's error (`.orig`) and appends SQL and a docs link.
    orig = getattr(exc, "orig", None)
    cause = orig if isinstance(orig, BaseException) else exc
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    message = _SECRETS.sub(lambda m: (m[1] + "***@") if m[1] else m[2] + "***", message)
    return f"{type(cause).__name__}: {message}"[:300]


class _DbProbe:
    """Runs `db_check` with a deadline, one check at a time.

    The check runs in its own thread so a hung connect cannot hold the HTTP handler past
    the deadline; while a check is still running, later requests wait on that same check
    instead of piling more threads onto a database that does not answer.
    """

    def __init__(self, check: DbCheck, timeout_s: float) -> None:
        self._check = check
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pending: Future[float] | None = None

    def _run(self, future: Future[float]) -> None:
        started = time.perf_counter()
        try:
            self._check()
        except BaseException as exc:  # any failure is the answer, not a crash of the server
            future.set_exception(exc)
        else:
            future.set_result((time.perf_counter() - started) * 1000)

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            if self._pending is None or self._pending.done():
                self._pending = Future()
                threading.Thread(
                    target=self._run, args=(self._pending,), name="db-health-check", daemon=True
                ).start()
            pending = self._pending
        waited = time.perf_counter()
        try:
            latency_ms = pending.result(timeout=self._timeout_s)
        except FutureTimeout:
            elapsed = (time.perf_counter() - waited) * 1000
            error = f"no answer within {self._timeout_s:g} s"
            return {"ok": False, "error": error, "latency_ms": round(elapsed, 1)}
        except BaseException as exc:  # whatever the check raised is its answer
            elapsed = (time.perf_counter() - waited) * 1000
            return {"ok": False, "error": _describe(exc), "latency_ms": round(elapsed, 1)}
        return {"ok": True, "latency_ms": round(latency_ms, 1)}


def _age(now: float, then: float | None) -> float | None:
    # Clamped: a wall-clock step backwards must not report a negative age.
    return None if then is None else round(max(0.0, now - then), 3)


def _freshness(now: float, last: float | None, started: float, stale_s: float) -> dict[str, Any]:
    """A check on a periodic event; before its first occurrence, the clock runs from start."""
    age = _age(now, last)
    since = age if age is not None else max(0.0, now - started)
    check: dict[str, Any] = {"ok": since <= stale_s, "age_s": age, "stale_after_s": stale_s}
    if not check["ok"]:
        check["error"] = (
            f"none for {since:.1f} s (stale after {stale_s:g} s)"
            if age is None
            else f"last {age:.1f} s ago (stale after {stale_s:g} s)"
        )
    return check


def _throttled(state: WorkerState) -> list[dict[str, Any]]:
    """The provider quotas this worker paces after 429s, with their rate."""
    rates = state.pacing() if state.pacing is not None else {}
    return [
        {
            "provider": key.provider,
            "region": key.region,
            "quota": key.quota,
            "calls_per_s": round(rate, 2),
        }
        for key, rate in sorted(rates.items())
        if rate is not None
    ]


def _in_flight(state: WorkerState, now: float) -> list[dict[str, Any]]:
    # The worker mutates the dict from its own thread: dict.copy() is one C-level step.
    jobs = state.in_flight.copy()
    rows = []
    for workflow_id, info in sorted(jobs.items()):
        row: dict[str, Any] = {"workflow_id": workflow_id}
        for key in ("deployment", "region", "test", "started_at"):
            row[key] = info.get(key)
        if isinstance(row["started_at"], int | float):
            row["running_s"] = _age(now, float(row["started_at"]))
        rows.append(row)
    return rows


class HealthServer:
    """Serves the worker's health endpoints from a background thread."""

    def __init__(
        self,
        state: WorkerState,
        db_check: DbCheck,
        host: str = "0.0.0.0",
        port: int | None = None,
        *,
        heartbeat_stale_s: float = 30.0,
        queue_stale_s: float = 15.0,
        db_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`port` defaults to WORKER_HEALTH_PORT (3002); 0 binds a free port (see `.port`)."""
        self.state = state
        self.heartbeat_stale_s = heartbeat_stale_s
        self.queue_stale_s = queue_stale_s
        self._probe = _DbProbe(db_check, db_timeout_s)
        self._clock = clock
        self._host = host
        self._port = get_settings().worker_health_port if port is None else port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        return self._server.server_address[1] if self._server else self._port

    def start(self) -> None:
        """Bind and serve in a daemon thread; returns once the socket is listening."""
        if self._server is not None:
            return
        try:
            server = ThreadingHTTPServer((self._host, self._port), _make_handler(self))
        except (OSError, OverflowError) as exc:  # in use, out of range, no such address
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UserError(
                f"worker health server cannot listen on {self._host}:{self._port} "
                f"({reason}); choose another port with --health-port or WORKER_HEALTH_PORT",
                field="health_port",
            ) from exc
        server.daemon_threads = True  # a stuck probe connection must not block exit
        self._server = server
        metrics.set_worker_up(True)
        # serve_forever checks for shutdown() every poll_interval: 0.1 s keeps stop() quick.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="worker-health", daemon=True
        )
        self._thread.start()
        log.info("worker health server listening on %s:%d", self._host, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def ready(self) -> tuple[int, dict[str, Any]]:
        """/ready: the DB answers, the queue loop polls, and the worker is not shutting down."""
        state, now = self.state, self._clock()
        database = self._probe()
        queue = _freshness(now, state.last_queue_poll, state.started_at, self.queue_stale_s)
        reasons = []
        if not database["ok"]:
            reasons.append(f"database: {database['error']}")
        if state.last_queue_poll is None:
            # Readiness is strict: no start-up grace, the loop must have polled at least once.
            queue["ok"], queue["error"] = False, "the queue loop has not polled yet"
        if not queue["ok"]:
            reasons.append(f"queue: {queue['error']}")
        if state.shutting_down:
            reasons.append("shutting down")
        body = {
            "status": "not_ready" if reasons else "ready",
            "reasons": reasons,
            "checks": {"database": database, "queue": queue},
        }
        return (503 if reasons else 200), body

    def health(self) -> tuple[int, dict[str, Any]]:
        """/health: the full picture; 503 when the DB, the heartbeat or the queue loop fail."""
        state, now = self.state, self._clock()
        checks = {
            "database": self._probe(),
            "heartbeat": _freshness(
                now, state.last_heartbeat, state.started_at, self.heartbeat_stale_s
            ),
            "queue": _freshness(now, state.last_queue_poll, state.started_at, self.queue_stale_s),
        }
        healthy = all(check["ok"] for check in checks.values())
        in_flight = _in_flight(state, now)
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "executor_id": state.executor_id,
            "regions": list(state.regions),
            "concurrency": state.concurrency,
            "shutting_down": state.shutting_down,
            "in_flight": in_flight,
            "in_flight_count": len(in_flight),
            "throttled": _throttled(state),
            "heartbeat_age_s": _age(now, state.last_heartbeat),
            "queue_poll_age_s": _age(now, state.last_queue_poll),
            "uptime_s": _age(now, state.started_at),
            "checks": checks,
        }
        return (200 if healthy else 503), body

    def metrics(self) -> tuple[bytes, str]:
        """/metrics: refresh the scrape-time gauges, then render the registry."""
        state, now = self.state, self._clock()
        last = state.started_at if state.last_heartbeat is None else state.last_heartbeat
        metrics.set_heartbeat_age(now - last)
        metrics.set_worker_up(True)
        return metrics.render_metrics()


def _make_handler(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that connects and never sends must not hold a thread
        server_version = "modelcert-worker"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            try:
                if path == "/live":
                    self._json(200, {"status": "alive"})
                elif path == "/ready":
                    self._json(*owner.ready())
                elif path == "/health":
                    self._json(*owner.health())
                elif path == "/metrics":
                    body, content_type = owner.metrics()
                    self._send(200, body, content_type)
                else:
                    self._json(404, {"error": "not found", "path": path})
            except Exception:
                log.exception("worker health endpoint %s failed", path)
                self._json(500, {"error": "internal error"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, default=str).encode()
            self._send(status, data, "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes hit these endpoints every few seconds: debug, not stderr.
            log.debug("worker health: " + format, *args)

    return Handler
