"""A private PostgreSQL cluster that a test may stop, restart and break: the chaos test's
database (tests/chaos). The suite's shared server (tests/conftest.py) is never touched.

`PgCluster` runs the PostgreSQL 15 binaries (`/usr/lib/postgresql/15/bin`, or
`MODELCERT_PG_BIN`) on a data directory of its own: trust authentication, listening on a
free port of 127.0.0.1 and on a unix socket in its directory, fsync off (a test's data
need not survive a power cut). PostgreSQL refuses to run as root: as root, `initdb` and
`pg_ctl` run as the system user `modelcert-chaos` (`runuser -u modelcert-chaos --`;
`.ci/run` creates the user), who is given the cluster's directory; any other user runs
them directly, as itself.

The directory must be reachable by that user: not under pytest's temporary directories,
whose root pytest resets to mode 0700 whenever a session starts (another session starting
on the machine would lock the cluster's own `pg_ctl` out of it mid-test). The fixture
(tests/chaos/conftest.py) makes one in the system's temporary directory and copies the
server's log into the test session's temporary directory at the end.

`host` and `wrap` put it elsewhere: the many-machines test (tests/chaos/test_netns.py)
runs it in a network namespace of its own (`wrap=["ip", "netns", "exec", <namespace>]`,
every initdb and pg_ctl command prefixed with it, so the server starts there) listening on
that namespace's address.

`unavailable_reason()` says why a cluster cannot run here (None when it can).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import create_engine, text

from modelcert.worker.process import free_port

PG_BIN = Path(os.environ.get("MODELCERT_PG_BIN", "/usr/lib/postgresql/15/bin"))
CLUSTER_USER = "modelcert-chaos"
SUPERUSER = "postgres"
PG_CTL_TIMEOUT_S = 60
# A unix socket path must fit in sun_path (108 bytes with its terminating zero).
MAX_SOCKET_PATH = 100

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Worker processes each hold DBOS's pools and ours; the test adds its own.
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


def unavailable_reason() -> str | None:
    """Why a private cluster cannot run on this machine, or None."""
    missing = [tool for tool in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / tool).exists()]
    if missing:
        return (
            f"PostgreSQL server binaries not found: no {', '.join(missing)} in {PG_BIN} "
            "(Debian: postgresql-15; or set MODELCERT_PG_BIN)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(CLUSTER_USER)
        except KeyError:
            return (
                f"running as root, and the user {CLUSTER_USER!r} that runs the private "
                "PostgreSQL cluster (initdb refuses root) does not exist: create it with "
                f"`useradd --system --no-create-home {CLUSTER_USER}` (.ci/run does)"
            )
        if shutil.which("runuser") is None:
            return "running as root without `runuser` to run PostgreSQL as another user"
    return None


class PgClusterError(RuntimeError):
    """A pg_ctl or initdb command failed."""


class PgCluster:
    """One PostgreSQL cluster in `base` (a directory this process may write)."""

    def __init__(
        self,
        base: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        wrap: Sequence[str] = (),
    ) -> None:
        self.base = base
        self.host = host  # the address it listens on (and URLs name)
        self.wrap = tuple(wrap)  # a prefix for its commands (e.g. ip netns exec NAME)
        self.data = base / "data"
        self.socket_dir = base / "sock"
        self.logfile = base / "postgres.log"
        self.port = port if port is not None else free_port()
        self._as_root = os.geteuid() == 0

    # -- set-up --------------------------------------------------------------------------

    def initdb(self) -> None:
        """Create the cluster's directory and data (once)."""
        self.base.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_dir / f".s.PGSQL.{self.port}")) > MAX_SOCKET_PATH:
            raise PgClusterError(f"socket path too long under {self.base}: use a shorter temp dir")
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            self._hand_over(self.base)
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=120,
        )
        settings = {
            **SETTINGS,
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/pg_cluster.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        if self.host != "127.0.0.1":  # clients on the host's own subnets (initdb: loopback)
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("\n# tests/support/pg_cluster.py\nhost all all samenet trust\n")

    def _hand_over(self, directory: Path) -> None:
        """Give `directory` (and what is in it) to the cluster user, who must reach it."""
        entry = pwd.getpwnam(CLUSTER_USER)
        for path in (directory, *directory.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        check = subprocess.run(
            ["runuser", "-u", CLUSTER_USER, "--", "test", "-w", str(directory)], check=False
        )
        if check.returncode != 0:
            raise PgClusterError(f"{CLUSTER_USER} cannot write {directory} (a parent is closed)")

    def _run(self, args: list[str], *, timeout: float = PG_CTL_TIMEOUT_S + 10) -> str:
        if self._as_root:
            args = ["runuser", "-u", CLUSTER_USER, "--", *args]
        args = [*self.wrap, *args]
        result = subprocess.run(
            args,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if result.returncode != 0:
            raise PgClusterError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
                f"\n{self.log()[-3000:]}"
            )
        return result.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(PG_CTL_TIMEOUT_S),
                *args,
            ]
        )

    # -- operations ----------------------------------------------------------------------

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: sessions are disconnected, transactions rolled back)."""
        self._pg_ctl("stop", "-m", mode)

    def restart_fast(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut; the server is back at once."""
        self._pg_ctl("restart", "-m", "fast")

    def stop_for(self, seconds: float) -> None:
        """Stop (fast), stay down `seconds`, start again."""
        self.stop()
        time.sleep(seconds)
        self.start()

    def running(self) -> bool:
        args = ["runuser", "-u", CLUSTER_USER, "--"] if self._as_root else []
        args += [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]
        return subprocess.run(args, capture_output=True, check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database in the cluster; returns its URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the server if it runs (immediately: nothing here needs to be kept)."""
        if self.data.exists() and self.running():
            self.stop("immediate")
