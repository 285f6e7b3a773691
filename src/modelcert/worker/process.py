"""One `modelcert worker` subprocess, for everything that starts workers from Python:
`modelcert up` and `demo` (cli/launcher.py), the tests that need a process boundary
(kill -9, SIGTERM, two workers) and the benchmarks.

The process gets its database URL, health port and executor id on its command line or in
its environment, logs to a file (or to this terminal), and is ready when its /ready says
so.
"""

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

READY_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerExited(RuntimeError):
    """The worker process ended while it was expected to run."""


class WorkerProcess:
    """A worker subprocess with its own health port and log."""

    def __init__(
        self,
        database_url: str,
        executor_id: str,
        *,
        log_path: Path | None = None,
        regions: Sequence[str] = (),
        health_port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.executor_id = executor_id
        self.port = health_port if health_port is not None else free_port()
        self.log_path = log_path  # None: the worker logs to this process's terminal
        self.regions = tuple(regions)
        self.env = dict(env or {})
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.killed = False
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def args(self) -> list[str]:
        args = [sys.executable, "-m", "modelcert", "worker", "--executor-id", self.executor_id]
        args += ["--health-port", str(self.port)]
        for region in self.regions:
            args += ["--region", region]
        return args

    def spawn(self) -> WorkerProcess:
        """Start the process; returns at once (see `wait_ready`)."""
        env = {**os.environ, "MODELCERT_DATABASE_URL": self.database_url, **self.env}
        if self.log_path is None:
            self.process = subprocess.Popen(self.args(), env=env, cwd=self.cwd)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Line by line: a worker killed with SIGKILL keeps its last lines in the file.
        env["PYTHONUNBUFFERED"] = "1"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args(), stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
        )
        return self

    def start(self, ready_timeout: float = READY_TIMEOUT_S) -> WorkerProcess:
        """Start the process and wait until it is ready."""
        self.spawn()
        self.wait_ready(ready_timeout)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise WorkerExited(
                    f"worker {self.executor_id} exited "
                    f"(code {self.process.returncode if self.process else None}): "
                    f"{self.log()[-3000:]}"
                )
            if self.get("/ready")[0] == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.executor_id} not ready: {self.log()[-3000:]}")

    def get(self, path: str) -> tuple[int, Any]:
        """GET one of the worker's health endpoints: (status, JSON or text); (0, None) when
        nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body = r.read()
                return r.status, json.loads(body) if path != "/metrics" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, None

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def peak_rss_kb(self) -> int:
        """The process's peak resident memory (VmHWM), in kB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.killed = True
        self.process.wait(timeout=10)
        self._close_log()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, and wait for the graceful exit; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._close_log()
        return code

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM if still running; SIGKILL if it does not exit within `timeout`."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
