"""Hosts on virtual LANs for tests: network namespaces, bridges and veth pairs, and routers.

Each host is a network namespace with one veth interface (`eth0`) on a subnet
of 10.213.0.0/16 and no route beyond the test subnets. A LAN's bridge lives
in a "switch" namespace of its own, and every veth pair is created directly
between the switch and the host namespace, so the root namespace gains no
interface and nothing here can reach the machine's real network. A router is
one more namespace, plugged into two LANs, with forwarding on inside it only.

Needs root and iproute2; `require_netns` skips a test, with the reason, where
namespaces cannot be made. Everything made is removed by `destroy`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)


def ip_ok(*args: str) -> str:
    result = ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def root_links() -> set[str]:
    """Names of the root namespace's interfaces (`ip -o link`: "N: NAME: <...")."""
    return {line.split(":")[1].strip() for line in ip_ok("-o", "link", "show").splitlines()}


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test, saying why; under CI (`CI` set) fail instead, never skip silently."""
    if os.environ.get("CI"):
        pytest.fail(f"network namespaces are required under CI: {reason}")
    pytest.skip(reason)


def require_netns() -> None:
    """Skip (fail under CI) the calling test, saying why, where namespaces cannot be made."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        unavailable("network namespaces need root")
    if shutil.which("ip") is None:
        unavailable("iproute2 ('ip') is not installed")
    probe = f"pc{os.getpid()}probe"
    result = ip("netns", "add", probe)
    if result.returncode != 0:
        unavailable(f"cannot create a network namespace: {result.stderr.strip()}")
    ip("netns", "del", probe)


def in_namespace(namespace: str, command: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


def tool(namespace: str, *args: str) -> list[str]:
    """A `tests.netns_tools` command run inside `namespace`."""
    return in_namespace(namespace, [sys.executable, "-m", "tests.netns_tools", *args])


class Lan:
    """A switch namespace with a bridge, and one namespace per host plugged into it.

    Hosts get addresses SUBNET.10, SUBNET.11, ...; `plug` adds any other
    namespace (a router) at an address of its choosing.
    """

    def __init__(self, hosts: int, subnet: str = "10.213.7", prefix: int = 24) -> None:
        tag = f"pc{os.getpid()}x{next(_counter)}"
        self.subnet = subnet
        self.prefix = prefix
        self.switch = f"{tag}sw"
        self.hosts = [f"{tag}h{i}" for i in range(hosts)]
        self.addresses = [f"{subnet}.{10 + i}" for i in range(hosts)]
        self.ports = [f"p{i}" for i in range(hosts)]  # bridge side of each host's cable
        self.made: list[str] = []

    @property
    def network(self) -> str:
        return f"{self.subnet}.0/{self.prefix}"

    @property
    def broadcast(self) -> str:
        return f"{self.subnet}.255"

    def build(self) -> None:
        self.add_namespace(self.switch)
        ip_ok(
            "-n",
            self.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        ip_ok("-n", self.switch, "link", "set", "br0", "up")
        for host, address, port in zip(self.hosts, self.addresses, self.ports, strict=True):
            self.add_namespace(host)
            self.plug(host, address, port)

    def add_namespace(self, name: str) -> None:
        ip_ok("netns", "add", name)
        self.made.append(name)
        ip_ok("-n", name, "link", "set", "lo", "up")

    def plug(self, namespace: str, address: str, port: str, ifname: str = "eth0") -> None:
        """A cable from the bridge (its end named `port`) to `ifname` in `namespace`."""
        # Both ends are born in their namespaces: the root namespace never holds them.
        ip_ok(
            "-n",
            self.switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            namespace,
        )
        ip_ok("-n", self.switch, "link", "set", port, "master", "br0")
        ip_ok("-n", self.switch, "link", "set", port, "up")
        ip_ok("-n", namespace, "addr", "add", f"{address}/{self.prefix}", "dev", ifname)
        ip_ok("-n", namespace, "link", "set", ifname, "up")

    def set_cable(self, host: int, up: bool) -> None:
        ip_ok("-n", self.switch, "link", "set", self.ports[host], "up" if up else "down")

    def destroy(self) -> None:
        for name in reversed(self.made):
            ip("netns", "del", name)
        self.made.clear()


class Router:
    """A namespace plugged into two LANs at their .1 address, forwarding between them.

    Each LAN's hosts get a route to the other LAN's subnet through it (and no
    default route), so unicast crosses and broadcast, which no router forwards,
    stays on its side.
    """

    def __init__(self, a: Lan, b: Lan) -> None:
        self.lans = (a, b)
        self.namespace = f"{a.switch[:-2]}r"
        self.addresses = (f"{a.subnet}.1", f"{b.subnet}.1")

    def build(self) -> None:
        a, b = self.lans
        a.add_namespace(self.namespace)  # removed with LAN a
        a.plug(self.namespace, self.addresses[0], "rtr", "eth0")
        b.plug(self.namespace, self.addresses[1], "rtr", "eth1")
        ip_ok("netns", "exec", self.namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for lan, other, gateway in ((a, b, self.addresses[0]), (b, a, self.addresses[1])):
            for host in lan.hosts:
                ip_ok("-n", host, "route", "add", other.network, "via", gateway)


def check_isolated(lans: Sequence[Lan], before: set[str]) -> None:
    """The rule these tests live by: nothing new in the root namespace, and no host
    has a route beyond the test subnets."""
    assert root_links() <= before, "the test LANs leaked into the root namespace"
    subnets = {lan.network for lan in lans}
    for lan in lans:
        for host in lan.hosts:
            routes = ip_ok("-n", host, "-4", "route", "show").splitlines()
            assert routes and all(r.split()[0] in subnets for r in routes), routes


class Background:
    """A process (in a namespace) whose output lines are collected as they come.

    `wait_for` blocks until a line matches, so tests await events instead of
    sleeping; `stop` closes its standard input (the tools stop then) and
    returns everything it printed.
    """

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, wanted: str | Callable[[str], bool], timeout: float) -> str:
        """The first line that starts with `wanted` (or satisfies it)."""
        match = wanted if callable(wanted) else (lambda line: line.startswith(wanted))
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{wanted!r} not seen within {timeout} s from {self.command[-6:]}: "
                        f"{self.lines[-20:]}"
                    )
                self._changed.wait(left)

    def stop(self, timeout: float = 15.0) -> list[str]:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        return list(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.stop()
