"""`make demo`'s main job, end to end: API + worker processes on SQLite, a batch of the
simulated demo catalog queued through the HTTP API, a progress bar, the matrix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_cli import FAST_ENV
from tests.support.workers import free_port


def test_demo_runs_through_the_api_and_workers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **FAST_ENV,  # the worker processes inherit it
        "MODELCERT_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db",
        "WORKER_HEALTH_PORT": str(free_port()),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "modelcert", "demo", "--workers", "1", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "30 simulated certifications queued through POST /certify-all" in out
    assert "30/30" in out
    assert "Certification matrix" in out and "SIMULATION" in out
    assert re.search(r"cost: \$0\.\d+ over 30 runs at the demo's DEMO prices", out), out[-2000:]
    # The demo's own suite ran beside the battery on its one deployment, in 3 regions.
    assert re.search(r"suites: demo-support@[0-9a-f]{16} ran beside the battery: 12 of 12", out)
    for expected in ("PERMISSION_ERROR", "AUTHENTICATION_ERROR", "TIMEOUT", "PREMIUM"):
        assert expected in out
    assert (tmp_path / ".modelcert" / "logs" / "worker-1.log").exists()
