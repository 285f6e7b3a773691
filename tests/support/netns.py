"""Hosts as Linux network namespaces, for the many-machines test (tests/chaos/test_netns.py).

`Topology(["pg", "h1", "h2"])` makes, in the root namespace, one bridge with the first
address of a free /24 of 10.77.0.0/16 (the test process reaches every host through it),
and per host a network namespace joined to the bridge by a veth pair: the host's end is
`veth0` (the next addresses: .2, .3, …), the root's end, a port of the bridge, is its
`link`. `cut(host)` sets that port down: the host keeps its address and routes but no
packet leaves or reaches it (a cable pulled at the switch), until `restore(host)`.

Names are unique per process and carry its pid (`mcn<pid base 36>-<host>`, 15 characters
at most, as interface names must be): `remove_stale()` deletes the namespaces and links a
process that no longer runs left behind (a test run killed before its finalizer), and
ones of this pid, which cannot be in use before it made them. It does not kill processes
still inside a stale namespace: it names them.

`unavailable_reason()` says why this machine cannot do it (None when it can): not root,
no `ip`, or namespaces, bridges or veths refused (a container without CAP_NET_ADMIN).

`NetnsWorker` is a `modelcert worker` process started in a host's namespace
(`ip netns exec <ns> python -m modelcert worker …`, which execs: its pid is the worker's),
its health endpoints asked at the host's address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcert.worker.process import WorkerProcess
from tests.support.workers import TEST_WORKER_ENV

PREFIX = "mcn"
SUPERNET = ipaddress.ip_network("10.77.0.0/16")
IP_TIMEOUT_S = 20


class NetnsError(RuntimeError):
    """An `ip` command failed."""


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def tag_for(pid: int) -> str:
    return f"{PREFIX}{_base36(pid)}"


def _owner_pid(name: str) -> int | None:
    """The pid a name of ours carries (None: not one of ours)."""
    head = name.split("-", 1)[0]
    if not head.startswith(PREFIX) or "-" not in name:
        return None
    try:
        return int(head[len(PREFIX) :], 36)
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    pid = _owner_pid(name)
    return pid is not None and (pid == os.getpid() or not _alive(pid))


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def links() -> list[str]:
    """Interface names in the root namespace (without the `@peer` suffix)."""
    names = []
    for line in ip("-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def remove_stale() -> list[str]:
    """Delete our namespaces and links whose process is gone; returns what was removed
    (a namespace with processes still in it is named with their pids)."""
    removed = []
    for name in namespaces():
        if _stale(name):
            pids = ip("netns", "pids", name, check=False).split()
            ip("netns", "del", name, check=False)
            removed.append(f"netns {name}" + (f" (processes left in it: {pids})" if pids else ""))
    for name in links():
        if _stale(name):
            ip("link", "del", name, check=False)
            removed.append(f"link {name}")
    return removed


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add, veth, bridge): run as root"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian: iproute2)"
    probe = f"{tag_for(os.getpid())}-probe"
    try:
        ip("netns", "add", probe)
        ip("link", "add", probe, "type", "veth", "peer", "name", "veth0", "netns", probe)
        ip("link", "add", f"{tag_for(os.getpid())}-pbr", "type", "bridge")
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"network namespaces, veths or bridges are not permitted here: {exc}"
    finally:
        ip("link", "del", f"{tag_for(os.getpid())}-pbr", check=False)
        ip("link", "del", probe, check=False)
        ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of SUPERNET that no address or route of the root namespace overlaps."""
    taken = []
    for line in ip("-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            taken.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for line in ip("-4", "route", "show").splitlines():
        first = line.split()[0] if line.split() else ""
        if first and first != "default":
            try:
                taken.append(ipaddress.ip_network(first, strict=False))
            except ValueError:
                continue
    subnets = list(SUPERNET.subnets(new_prefix=24))
    start = os.getpid() % len(subnets)
    for index in range(len(subnets)):
        subnet = subnets[(start + index) % len(subnets)]
        if subnet.network_address.packed[2] == 0:
            continue  # 10.77.0.0/24: keep it for people's own experiments
        if not any(subnet.overlaps(net) for net in taken if isinstance(net, type(subnet))):
            return subnet
    raise NetnsError(f"no free /24 in {SUPERNET}")


@dataclass(frozen=True)
class Host:
    name: str  # "pg", "h1", …
    netns: str
    address: str
    link: str  # the root's end of its veth pair, a port of the bridge

    def exec_prefix(self) -> list[str]:
        """Run a command on this host: prefix it with this."""
        return ["ip", "netns", "exec", self.netns]


class Topology:
    """A bridge in the root namespace and one namespace per host (module docstring)."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = tag_for(os.getpid())
        self.bridge = f"{self.tag}-br"
        self.subnet = _free_subnet()
        addresses = self.subnet.hosts()
        self.gateway = str(next(addresses))
        self.hosts: dict[str, Host] = {}
        for name in hosts:
            link = f"{self.tag}-{name}"
            if len(link) > 15 or name == "br":
                raise ValueError(f"host name {name!r} makes the interface name {link!r}")
            self.hosts[name] = Host(name, f"{self.tag}-{name}", str(next(addresses)), link)
        self.cut_links: set[str] = set()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def up(self) -> None:
        prefix = self.subnet.prefixlen
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host in self.hosts.values():
            ip("netns", "add", host.netns)
            ip(
                "link",
                "add",
                host.link,
                "type",
                "veth",
                "peer",
                "name",
                "veth0",
                "netns",
                host.netns,
            )
            ip("link", "set", host.link, "master", self.bridge, "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/{prefix}", "dev", "veth0")
            ip("-n", host.netns, "link", "set", "veth0", "up")
            ip("-n", host.netns, "link", "set", "lo", "up")

    def cut(self, name: str) -> None:
        """Pull the host's cable: its bridge port goes down."""
        ip("link", "set", self.hosts[name].link, "down")
        self.cut_links.add(name)

    def restore(self, name: str) -> None:
        ip("link", "set", self.hosts[name].link, "up")
        self.cut_links.discard(name)

    def down(self) -> list[str]:
        """Delete every namespace and the bridge (deleting a namespace deletes its veth
        pair); returns what could not be deleted, or processes still in a namespace."""
        problems = []
        for host in self.hosts.values():
            pids = ip("netns", "pids", host.netns, check=False).split()
            if pids:
                problems.append(f"processes still in {host.netns}: {pids}")
            try:
                ip("netns", "del", host.netns)
            except NetnsError as exc:
                problems.append(str(exc))
            ip("link", "del", host.link, check=False)  # gone with the namespace, normally
        try:
            ip("link", "del", self.bridge)
        except NetnsError as exc:
            problems.append(str(exc))
        left = [n for n in (*namespaces(), *links()) if n.startswith(f"{self.tag}-")]
        if left:
            problems.append(f"still there: {left}")
        return problems


class NetnsWorker(WorkerProcess):
    """A worker process on a host of a `Topology`."""

    def __init__(self, host: Host, database_url: str, executor_id: str, **kwargs: Any) -> None:
        super().__init__(database_url, executor_id, **kwargs)
        self.host = host

    def args(self) -> list[str]:
        return [*self.host.exec_prefix(), *super().args()]

    def get(self, path: str) -> tuple[int, Any]:
        """GET a health endpoint at the host's address (from the root namespace, over the
        bridge): (status, JSON); (0, None) when nothing answers."""
        url = f"http://{self.host.address}:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
                return response.status, json.loads(body) if path != "/metrics" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, None


StartNetnsWorker = Callable[..., NetnsWorker]


@contextmanager
def netns_workers(database_url: str, log_dir: Path, **env: str) -> Iterator[StartNetnsWorker]:
    """`start(host, executor_id, regions=(...))` starts a worker process on `host` (not
    waited for: `wait_ready`), logging to `log_dir/<executor_id>.log`, with the test
    suite's worker environment (tests/support/workers.py), no shutdown grace unless `env`
    gives one, and `env`. On exit every one still running is stopped, all at once."""
    started: list[NetnsWorker] = []

    def start(host: Host, executor_id: str, *, regions: Sequence[str] = ()) -> NetnsWorker:
        worker = NetnsWorker(
            host,
            database_url,
            executor_id,
            log_path=log_dir / f"{executor_id}.log",
            regions=regions,
            env={**TEST_WORKER_ENV, "MODELCERT_SHUTDOWN_GRACE_S": "0", **env},
        )
        started.append(worker)
        worker.spawn()
        return worker

    try:
        yield start
    finally:
        for worker in started:  # all at once: their shutdowns overlap
            if worker.running() and worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in started:
            worker.stop(timeout=15)
