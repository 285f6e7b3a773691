"""Browser fixtures: Debian's headless Chromium driven by Selenium, and a real modelcert
service (API process + worker process) on a temporary SQLite file.

The browser tests skip, with the reason, where Chromium or chromedriver is missing; CI
exports MODELCERT_REQUIRE_BROWSER=1 (see .ci/run) so that there they fail instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelcert.store import api_keys, db, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from tests.support.chromium import CHROMEDRIVER, CHROMIUM, start_chromium
from tests.support.workers import free_port, test_worker

REQUIRE_BROWSER = os.environ.get("MODELCERT_REQUIRE_BROWSER") == "1"
REGIONS = ("us-east-1", "eu-west-1")


def _browser_missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found: install the Debian package {package} (see .ci/run)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    missing = _browser_missing()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"MODELCERT_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    return CHROMIUM, CHROMEDRIVER


@dataclass
class Service:
    """A running API and worker on one SQLite database, with an operator and a viewer key."""

    url: str
    database_url: str
    operator_key: str
    viewer_key: str
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"API not answering: {log.read_text()[-3000:]}")


@pytest.fixture
def service(chromium_paths: tuple[str, str], tmp_path: Path) -> Iterator[Service]:
    """Sim deployments (`lab/steady` healthy and slow enough to watch, `lab/denied` refused
    by the provider), `modelcert api` and `modelcert worker` as real processes."""
    database_url = f"sqlite:///{tmp_path}/modelcert.db"
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=list(REGIONS))
        for name, profile, latency in (
            ("steady", "healthy-fast", 250),
            ("denied", "access-denied", 20),
        ):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=name,
                options={"profile": profile, "latency_ms": latency},
            )
        _, operator_key = api_keys.create_api_key(session, "alice-ops", Role.operator)
        _, viewer_key = api_keys.create_api_key(session, "victor-viewer", Role.viewer)
    engine.dispose()

    port = free_port()
    env = {
        **os.environ,
        "MODELCERT_DATABASE_URL": database_url,
        "MODELCERT_QUEUE_POLL_S": "0.1",
        "MODELCERT_LOG_JSON": "1",
    }
    log_path = tmp_path / "api.log"
    api = subprocess.Popen(
        [sys.executable, "-m", "modelcert", "api", "--port", str(port)],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    # Both processes start at once: the worker's start-up overlaps the API's.
    worker = test_worker(database_url, "browser-worker", tmp_path, regions=REGIONS)
    try:
        worker.spawn()
        _wait_http(f"http://127.0.0.1:{port}/dashboard/login", api, log_path)
        worker.wait_ready()
        yield Service(
            url=f"http://127.0.0.1:{port}",
            database_url=database_url,
            operator_key=operator_key,
            viewer_key=viewer_key,
            log_dir=tmp_path,
            processes=[api],
        )
    finally:
        api.terminate()  # both stop at once
        worker.stop()
        try:
            api.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


@pytest.fixture
def browser(chromium_paths: tuple[str, str], tmp_path: Path) -> Iterator[object]:
    """A fresh headless Chromium (its own profile directory), driven through chromedriver."""
    chromium, chromedriver = chromium_paths
    profile = tmp_path / "chromium-profile"
    driver = start_chromium(profile, chromium, chromedriver)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
