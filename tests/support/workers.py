"""Real worker processes for the queue tests: `python -m modelcert worker`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerProcess:
    """One `modelcert worker` subprocess with its own health port and log file."""

    def __init__(
        self,
        database_url: str,
        executor_id: str,
        log_dir: Path,
        *,
        regions: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.executor_id = executor_id
        self.port = free_port()
        self.log_path = log_dir / f"{executor_id}.log"
        self.regions = regions
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60) -> WorkerProcess:
        args = [
            sys.executable,
            "-m",
            "modelcert",
            "worker",
            "--executor-id",
            self.executor_id,
            "--health-port",
            str(self.port),
        ]
        for region in self.regions:
            args += ["--region", region]
        env = {
            **os.environ,
            "MODELCERT_DATABASE_URL": self.database_url,
            "MODELCERT_QUEUE_POLL_S": "0.1",
            "MODELCERT_LOG_JSON": "1",
            "MODELCERT_SHUTDOWN_GRACE_S": "30",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if self.get("/ready")[0] == 200:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body = r.read()
                return r.status, json.loads(body) if path != "/metrics" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
