"""The chaos tests' private PostgreSQL cluster (tests/support/pg_cluster.py), made once
per session: they stop and restart it, which the suite's shared server must never see."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg_cluster import PgCluster, unavailable_reason

# As in tests/conftest.py: CI sets it so that the PostgreSQL tests fail instead of skipping.
REQUIRE_POSTGRES = os.environ.get("MODELCERT_REQUIRE_POSTGRES") == "1"
# CI sets it so that the many-machines test (test_netns.py) fails instead of skipping
# where network namespaces cannot be made (not root, no `ip`, not permitted).
REQUIRE_NETNS = os.environ.get("MODELCERT_REQUIRE_NETNS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: kills workers and breaks a private PostgreSQL cluster (tests/chaos)"
    )


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A running private cluster (initdb once per session); stopped at the end."""
    reason = unavailable_reason()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MODELCERT_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    # Not under pytest's temporary root: pytest makes it 0700 again when any session starts
    # (tests/support/pg_cluster.py), and the cluster's user must reach its directory.
    base = Path(tempfile.mkdtemp(prefix="modelcert-pg-"))
    cluster = PgCluster(base)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            kept = tmp_path_factory.mktemp("pg-cluster") / "postgres.log"
            kept.write_text(cluster.log())
            shutil.rmtree(base, ignore_errors=True)
