"""The chaos test's private PostgreSQL cluster does what the faults need: a database of its
own, a fast restart that cuts every connection, and an outage of a given length after
which a pooled engine (pre-ping, as the app's) carries on."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from modelcert.store import db
from tests.support.pg_cluster import PgCluster

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]


def test_restart_and_outage(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("cluster_check")
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW fsync")).scalar() == "off"
            before = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        pg_cluster.restart_fast()
        with engine.connect() as connection:  # the pooled connection was cut: a new one
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != before
        began = time.monotonic()
        with engine.connect() as held:
            pg_cluster.stop()
            with pytest.raises(OperationalError):
                held.execute(text("SELECT 1"))
        with pytest.raises(OperationalError), engine.connect():
            pass
        pg_cluster.start()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        pg_cluster.stop_for(0.5)
        assert time.monotonic() - began >= 0.5
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
        if not pg_cluster.running():
            pg_cluster.start()
