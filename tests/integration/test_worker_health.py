"""The worker health server over real HTTP, against real databases.

Healthy cases use a real SQLite file; the database-down cases use a PostgreSQL URL on a
closed port (a real refused connection) and a TCP listener that never answers (a real
hang), not mocks: the old /health said healthy with the database down (DOMAIN §6).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from modelcert.certify.throttle import QuotaKey, ThrottleGates
from modelcert.obs.metrics import METRIC_NAMES
from modelcert.store.db import make_engine
from modelcert.worker.health import HealthServer, WorkerState, database_check

SECRET = "s3cret-pw"
# Port 1 on loopback: nothing listens there, so the connection is refused at once.
UNREACHABLE_URL = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/x"


def get(port: int, path: str) -> tuple[int, str, bytes]:
    """GET http://127.0.0.1:port/path → (status, content type, body), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, content_type, body = get(port, path)
    assert content_type == "application/json"
    assert SECRET not in body.decode()  # never a credential in a response
    return status, json.loads(body)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'health.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def unreachable_engine() -> Iterator[Engine]:
    engine = make_engine(UNREACHABLE_URL, connect_args={"connect_timeout": 1})
    yield engine
    engine.dispose()


def fresh_state() -> WorkerState:
    now = time.time()
    return WorkerState(
        executor_id="worker-test-1",
        regions=("us-east-1", "eu-west-1"),
        concurrency=3,
        started_at=now - 100,
        last_heartbeat=now - 1,
        last_queue_poll=now - 0.5,
        in_flight={
            "wf-1": {
                "deployment": "sim/aurora-fast",
                "region": "us-east-1",
                "started_at": now - 4,
                "test": "streaming",
            }
        },
    )


ServerFactory = Callable[..., HealthServer]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """Starts HealthServers on 127.0.0.1, free ports; stops them all after the test."""
    servers: list[HealthServer] = []

    def start(state: WorkerState, engine: Engine, **options: Any) -> HealthServer:
        server = HealthServer(state, database_check(engine), host="127.0.0.1", port=0, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_live(serve: ServerFactory, unreachable_engine: Engine) -> None:
    # Liveness is about the process only: even with the database down it answers.
    server = serve(fresh_state(), unreachable_engine)
    assert server.port > 0
    assert get_json(server.port, "/live") == (200, {"status": "alive"})


def test_ready_when_healthy(serve: ServerFactory, sqlite_engine: Engine) -> None:
    server = serve(fresh_state(), sqlite_engine)
    status, body = get_json(server.port, "/ready")
    assert status == 200
    assert body["status"] == "ready"
    assert body["reasons"] == []
    assert body["checks"]["database"]["ok"] is True


def test_not_ready_when_queue_loop_is_stale(serve: ServerFactory, sqlite_engine: Engine) -> None:
    state = fresh_state()
    state.last_queue_poll = time.time() - 60
    server = serve(state, sqlite_engine)
    status, body = get_json(server.port, "/ready")
    assert status == 503
    assert body["status"] == "not_ready"
    assert len(body["reasons"]) == 1
    assert body["reasons"][0].startswith("queue: last 60")
    assert body["checks"]["queue"]["ok"] is False


def test_not_ready_before_the_first_poll(serve: ServerFactory, sqlite_engine: Engine) -> None:
    state = fresh_state()
    state.last_queue_poll = None
    server = serve(state, sqlite_engine)
    status, body = get_json(server.port, "/ready")
    assert status == 503
    assert body["reasons"] == ["queue: the queue loop has not polled yet"]


def test_not_ready_when_shutting_down(serve: ServerFactory, sqlite_engine: Engine) -> None:
    state = fresh_state()
    server = serve(state, sqlite_engine)
    assert get_json(server.port, "/ready")[0] == 200
    state.shutting_down = True  # the worker flips it on SIGTERM; the server reads it live
    status, body = get_json(server.port, "/ready")
    assert (status, body["reasons"]) == (503, ["shutting down"])
    assert get_json(server.port, "/live")[0] == 200


def test_not_ready_when_database_unreachable(
    serve: ServerFactory, unreachable_engine: Engine
) -> None:
    server = serve(fresh_state(), unreachable_engine)
    status, body = get_json(server.port, "/ready")
    assert status == 503
    assert len(body["reasons"]) == 1
    assert body["reasons"][0].startswith("database: OperationalError")
    assert body["checks"]["database"]["ok"] is False


def test_health_when_healthy(serve: ServerFactory, sqlite_engine: Engine) -> None:
    server = serve(fresh_state(), sqlite_engine)
    status, body = get_json(server.port, "/health")
    assert status == 200
    assert body["status"] == "healthy"
    assert body["executor_id"] == "worker-test-1"
    assert body["regions"] == ["us-east-1", "eu-west-1"]
    assert body["concurrency"] == 3
    assert body["shutting_down"] is False
    assert body["in_flight_count"] == 1
    assert body["throttled"] == []  # no gate paced
    (job,) = body["in_flight"]
    assert job["workflow_id"] == "wf-1"
    assert (job["deployment"], job["region"], job["test"]) == (
        "sim/aurora-fast",
        "us-east-1",
        "streaming",
    )
    assert 3.5 < job["running_s"] < 30
    assert 0.5 <= body["heartbeat_age_s"] < 30
    assert 0 <= body["queue_poll_age_s"] < 15
    assert 99 < body["uptime_s"] < 130
    checks = body["checks"]
    assert set(checks) == {"database", "heartbeat", "queue"}
    assert checks["database"]["ok"] is True
    assert "error" not in checks["database"]
    assert checks["database"]["latency_ms"] >= 0
    assert checks["heartbeat"] == {
        "ok": True,
        "age_s": checks["heartbeat"]["age_s"],
        "stale_after_s": 30.0,
    }
    assert checks["queue"]["ok"] is True
    assert checks["queue"]["stale_after_s"] == 15.0


def test_health_unhealthy_when_database_unreachable(
    serve: ServerFactory, unreachable_engine: Engine
) -> None:
    server = serve(fresh_state(), unreachable_engine)
    status, body = get_json(server.port, "/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    database = body["checks"]["database"]
    assert database["ok"] is False
    assert database["error"].startswith("OperationalError")
    assert "127.0.0.1" in database["error"]  # the cause is named, the password is not
    assert body["checks"]["heartbeat"]["ok"] is True
    assert body["checks"]["queue"]["ok"] is True


def test_health_unhealthy_when_database_hangs(serve: ServerFactory) -> None:
    # A listener that accepts TCP but never speaks PostgreSQL: the connect hangs.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        engine = make_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/x", connect_args={"connect_timeout": 5}
        )
        try:
            server = serve(fresh_state(), engine, db_timeout_s=0.5)
            started = time.monotonic()
            status, body = get_json(server.port, "/health")
            assert time.monotonic() - started < 3  # the probe's deadline, not the driver's
            assert status == 503
            assert body["checks"]["database"] == {
                "ok": False,
                "error": "no answer within 0.5 s",
                "latency_ms": body["checks"]["database"]["latency_ms"],
            }
        finally:
            engine.dispose()


def test_health_unhealthy_when_heartbeat_stale(serve: ServerFactory, sqlite_engine: Engine) -> None:
    state = fresh_state()
    state.last_heartbeat = time.time() - 45
    server = serve(state, sqlite_engine)
    status, body = get_json(server.port, "/health")
    assert status == 503
    heartbeat = body["checks"]["heartbeat"]
    assert heartbeat["ok"] is False
    assert heartbeat["error"].startswith("last 45")
    assert body["checks"]["database"]["ok"] is True
    # A stale heartbeat is a health problem, not a readiness one.
    assert get_json(server.port, "/ready")[0] == 200


def test_health_unhealthy_when_queue_loop_stale(
    serve: ServerFactory, sqlite_engine: Engine
) -> None:
    state = fresh_state()
    server = serve(state, sqlite_engine, queue_stale_s=5)
    assert get_json(server.port, "/health")[0] == 200
    state.last_queue_poll = time.time() - 6
    status, body = get_json(server.port, "/health")
    assert status == 503
    assert body["checks"]["queue"]["ok"] is False


def test_metrics_endpoint(serve: ServerFactory, sqlite_engine: Engine) -> None:
    state = fresh_state()
    state.last_heartbeat = time.time() - 7
    server = serve(state, sqlite_engine)
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert set(families) == {name.removesuffix("_total") for name in METRIC_NAMES}
    (age,) = families["modelcert_worker_heartbeat_age_seconds"].samples
    assert 7 <= age.value < 30  # refreshed by the scrape itself
    (up,) = families["modelcert_worker_up"].samples
    assert up.value == 1


def test_unknown_path_is_404(serve: ServerFactory, sqlite_engine: Engine) -> None:
    server = serve(fresh_state(), sqlite_engine)
    status, body = get_json(server.port, "/nope")
    assert status == 404
    assert body == {"error": "not found", "path": "/nope"}


def test_stop_closes_the_port(sqlite_engine: Engine) -> None:
    server = HealthServer(fresh_state(), database_check(sqlite_engine), host="127.0.0.1", port=0)
    server.start()
    port = server.port
    assert get(port, "/live")[0] == 200
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        get(port, "/live")


def test_health_lists_the_pairs_paced_after_429s(
    serve: ServerFactory, sqlite_engine: Engine
) -> None:
    gates = ThrottleGates()
    gates.get(QuotaKey("sim", "us-east-1", "m1")).rate = 12.345  # as learnt from 429s
    gates.get(QuotaKey("sim", "us-east-1", "m2"))  # seen, never throttled: not paced
    state = fresh_state()
    state.pacing = gates.rates
    _, body = get_json(serve(state, sqlite_engine).port, "/health")
    assert body["throttled"] == [
        {"provider": "sim", "region": "us-east-1", "quota": "m1", "calls_per_s": 12.35}
    ]
