"""One machine, one command: the API (in this process) and N worker processes on the
embedded database. Used by `modelcert up` and `modelcert demo`."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import uvicorn

from modelcert.api.app import create_app
from modelcert.cli.common import check_can_listen
from modelcert.errors import UserError
from modelcert.settings import Settings
from modelcert.store import db
from modelcert.worker.process import WorkerProcess


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class LocalCluster:
    """The API served by uvicorn in a thread, plus `workers` worker subprocesses."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 2,
        host: str = "127.0.0.1",
        port: int = 8000,
        log_dir: Path | None = None,
    ) -> None:
        if workers < 1:
            raise UserError("--workers must be at least 1", field="workers")
        self.settings = settings
        self.worker_count = workers
        self.host = host
        self.port = port
        self.log_dir = log_dir  # None: workers log to this terminal
        self.health_ports = [settings.worker_health_port + i for i in range(workers)]
        self.workers = [
            WorkerProcess(
                settings.database_url,
                f"{socket.gethostname()}-worker-{index}",
                log_path=log_dir / f"worker-{index}.log" if log_dir else None,
                health_port=port,
            )
            for index, port in enumerate(self.health_ports, start=1)
        ]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60) -> None:
        check_can_listen(self.host, self.port, "choose another port with --port")
        for port in self.health_ports:
            check_can_listen(
                self.settings.worker_health_host,
                port,
                f"the {self.worker_count} workers' health servers listen on WORKER_HEALTH_PORT "
                "and the ports after it: choose another",
            )
        db.upgrade(db.make_engine(self.settings.database_url))
        for worker in self.workers:
            worker.spawn()
        config = uvicorn.Config(
            create_app(self.settings), host=self.host, port=self.port, log_level="warning"
        )
        # uvicorn installs no signal handlers outside the main thread: signals stay with
        # whoever owns it (`up`, `demo`), which stops everything in order.
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        urls = [f"{self.url}/api/health"] + [
            f"http://127.0.0.1:{port}/ready" for port in self.health_ports
        ]
        while time.monotonic() < deadline:
            for worker in self.workers:
                if not worker.running():
                    self.stop()
                    raise UserError(
                        f"worker {worker.executor_id} exited at start"
                        + (f"; see {self.log_dir}" if self.log_dir else "")
                    )
            if all(_get(url) == 200 for url in urls):
                return
            time.sleep(0.3)
        self.stop()
        raise UserError(f"the API and workers were not ready within {timeout:.0f} s")

    def wait(self) -> None:
        """Block until SIGTERM / SIGINT."""
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.wait(1.0):
            if not all(worker.running() for worker in self.workers):
                print("a worker exited; stopping", file=sys.stderr)
                break

    def stop(self) -> None:
        """Stop the API, then the workers gracefully (they finish in-flight work)."""
        if self._server is not None:
            self._server.should_exit = True
        for worker in self.workers:
            if worker.running():
                assert worker.process is not None
                worker.process.send_signal(signal.SIGTERM)  # all at once: they drain together
        for worker in self.workers:
            worker.stop(timeout=self.settings.shutdown_grace_s + 10)
        if self._thread is not None:
            self._thread.join(timeout=10)
