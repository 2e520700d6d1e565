"""Real peer_chat processes for tests, driven as a person would drive them.

Every peer gets its own data folder, a free TCP port, and discovery on the
loopback broadcast address 127.255.255.255 with a discovery port chosen per
test, so no test traffic ever leaves this machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO, TypeVar

import pexpect
import pytest
from cryptography.hazmat.primitives import serialization

from crypto_utils import Identity, KeyManager, fingerprint_of, short_id
from discovery import DiscoveryService
from peerchat.errors import ProtocolError
from peerchat.events import UiEvent
from peerchat.net.node import Node, NodeConfig
from peerchat.protocol.beacon import Beacon, BeaconAccepted, BeaconFilter, decode_beacon
from storage import HistoryStore

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "peer_chat.py"
LOOPBACK_BROADCAST = "127.255.255.255"
PROMPT = "Enter choice:"


def cannot_set_up(reason: str) -> NoReturn:
    """Skip a test this machine cannot set up (no root, no tool); under CI, fail instead.

    CI (the CI environment variable set) is meant to provide every capability
    the suite needs, so there a skip would only hide that one went missing.
    """
    if os.environ.get("CI"):
        pytest.fail(f"cannot set up the test, and CI is set: {reason}", pytrace=False)
    pytest.skip(reason)


def free_tcp_port() -> int:
    """A free TCP port below the ephemeral range.

    A port from the ephemeral range may be taken as the source port of any
    outgoing connection before the peer binds it ("Port ... is already in
    use"), and tests restart peers on their port many times.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(200):
        port = random.randrange(max(1024, ephemeral - 12_000), ephemeral)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def open_profile(data_dir: Path) -> tuple[Identity, HistoryStore]:
    """A peer's keys and history in `data_dir`, made as peer_chat makes them (created if new)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = KeyManager(data_dir)
    identity = keys.load_or_create_identity()
    return identity, HistoryStore.open(data_dir / "chat_history.db", keys.load_or_create_sealer())


@dataclass
class RunningNode:
    """A Node in this test's process, with the news it has shown so far."""

    node: Node
    store: HistoryStore
    port: int
    events: list[UiEvent] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def on_event(self, event: UiEvent) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def close(self) -> None:
        self.node.close()
        self.store.close()


R = TypeVar("R", bound=RunningNode)


def start_node(config: NodeConfig, identity: Identity, store: HistoryStore, kind: type[R]) -> R:
    """A node started and running, as peer_chat starts one (`close()` it after)."""
    running = kind(node=None, store=store, port=config.port)  # type: ignore[arg-type]
    running.node = Node(config, identity, store, running.on_event)
    try:
        running.node.start()
    except BaseException:
        store.close()
        raise
    running.node.run()
    return running


def loopback_discovery(
    identity: Identity,
    name: str,
    *,
    tcp_port: int,
    discovery_port: int,
    on_beacon: Callable[[BeaconAccepted], None] = lambda _: None,
    interval: float = 5.0,
    beacon_filter: BeaconFilter | None = None,
) -> DiscoveryService:
    """A discovery service that beacons to the loopback broadcast address only."""
    return DiscoveryService(
        identity=identity,
        name=name,
        tcp_port=tcp_port,
        targets=[LOOPBACK_BROADCAST],
        discovery_port=discovery_port,
        interval=interval,
        on_beacon=on_beacon,
        beacon_filter=beacon_filter,
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TERM": "xterm",
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8",
            "LC_ALL": "C.UTF-8",
            "COLUMNS": "200",
            "LINES": "50",
        }
    )
    env.pop(PASSPHRASE_ENV, None)
    env.update(extra or {})
    return env


PASSPHRASE_ENV = "PEER_CHAT_PASSPHRASE"


def peer_args(
    name: str,
    port: int,
    data_dir: Path,
    discovery_port: int | None,
    *,
    beacon_interval: float = 0.5,
    peer_timeout: float = 3.0,
    extra: Sequence[str] = (),
    broadcast: str | None = LOOPBACK_BROADCAST,
) -> list[str]:
    """The peer's command line; `broadcast=None` keeps the program's default address."""
    args = [str(SCRIPT), "--name", name, "--port", str(port), "--data-dir", str(data_dir)]
    if discovery_port is None:
        args.append("--no-discovery")
    else:
        if broadcast is not None:
            # mDNS has one port for the whole host: on loopback every test's peers
            # would meet. Only peers in a test's own namespaces (broadcast=None) use it.
            args += ["--broadcast", broadcast, "--no-mdns"]
        args += [
            "--discovery-port",
            str(discovery_port),
            "--beacon-interval",
            str(beacon_interval),
            "--peer-timeout",
            str(peer_timeout),
        ]
    return args + list(extra)


class Peer:
    """One peer_chat process on a pseudo-terminal, driven through its menu."""

    def __init__(
        self,
        name: str,
        tmp: Path,
        discovery_port: int | None,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        timeout: float = 20.0,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        peer_timeout: float = 3.0,
        beacon_interval: float = 0.5,
        host: str = "127.0.0.1",
        broadcast: str | None = LOOPBACK_BROADCAST,
        launch: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """`launch` turns the peer's command line into the one to run (e.g. in a namespace).

        The program's default broadcast address (`broadcast=None`) is for peers
        launched in a namespace the test made; anywhere else it would leave the
        machine.
        """
        if broadcast is None and launch is None:
            raise ValueError("the default broadcast address is only for a test namespace")
        self.name = name
        self.port = port or free_tcp_port()
        self.data_dir = data_dir or tmp / name
        self.addr = f"{host}:{self.port}"
        command = [
            sys.executable,
            *peer_args(
                name,
                self.port,
                self.data_dir,
                discovery_port,
                peer_timeout=peer_timeout,
                beacon_interval=beacon_interval,
                extra=extra,
                broadcast=broadcast,
            ),
        ]
        if launch is not None:
            command = launch(command)
        self.log = open(tmp / f"{name}-{self.port}.screen.log", "a", encoding="utf-8")  # noqa: SIM115
        # Everything the terminal showed, so that a line printed while the test
        # waited for something else (news arrives at any time) is still found.
        self._screen: list[str] = []
        self._cursor = 0
        self.child = pexpect.spawn(
            command[0],
            command[1:],
            cwd=str(ROOT),
            env=child_env(env),
            encoding="utf-8",
            timeout=timeout,
            dimensions=(50, 200),
        )
        self.child.logfile_read = _Tee(self.log, self._screen)
        self.child.expect(f"Server listening on port {self.port}")
        self.expect_menu()

    def expect(self, pattern: str | list[str], timeout: float | None = None) -> int:
        return int(self.child.expect(pattern, timeout=timeout if timeout is not None else -1))

    def screen(self) -> str:
        """All the raw output so far (escape sequences included)."""
        if len(self._screen) > 1:
            self._screen[:] = ["".join(self._screen)]
        return self._screen[0] if self._screen else ""

    def expect_text(self, text: str, timeout: float | None = None) -> None:
        """Wait for `text` to appear after the previous `expect_text` match.

        News lines are searched in everything shown so far, not only in what
        pexpect has not consumed yet, because they may arrive while the test was
        waiting for a prompt.
        """
        limit = timeout if timeout is not None else float(self.child.timeout)
        deadline = time.monotonic() + limit
        while True:
            found = self.screen().find(text, self._cursor)
            if found >= 0:
                self._cursor = found + len(text)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise pexpect.TIMEOUT(f"{text!r} not shown; last output: {self.screen()[-300:]!r}")
            self.child.expect_exact(text, timeout=remaining)

    def expect_all(self, *texts: str, timeout: float | None = None) -> None:
        """Wait for every one of `texts`, in any order (news races the menu's own lines)."""
        start = self._cursor
        end = start
        for text in texts:
            self._cursor = start
            self.expect_text(text, timeout)
            end = max(end, self._cursor)
        self._cursor = end

    def expect_menu(self) -> None:
        self.child.expect_exact(PROMPT)

    def answer(self, prompt: str, value: str) -> None:
        self.child.expect_exact(prompt.rstrip())
        self.child.sendline(value)

    def choose(self, option: str) -> None:
        self.child.sendline(option)

    def send_to(self, target: str, text: str, port: int | None = None) -> None:
        self.choose("1")
        self.answer("Enter recipient's IP:", target)
        if port is not None:
            self.answer("Enter recipient's port number:", str(port))
        self.answer("Enter your message:", text)

    def connect(self, host: str, port: int | None) -> None:
        self.choose("4")
        self.answer("Enter peer's IP:", host)
        if port is not None:
            self.answer("Enter peer's port number:", str(port))

    def peers_table(self) -> str:
        self.choose("2")
        index = self.expect(["Connected Peers:", "No connected peers."])
        if index == 1:
            self.expect_menu()
            return ""
        self.expect_menu()
        return str(self.child.before)

    def history(self, who: str = "") -> str:
        """Option 3, of everyone or, given on the same line, of one peer (name or number)."""
        self.choose(f"3 {who}" if who else "3")
        self.expect(["oldest first", "No messages."])
        self.expect_menu()
        return strip_ansi(str(self.child.before))

    def quit(self, timeout: float = 5.0) -> int:
        self.choose("0")
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        self.log.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def kill(self) -> None:
        if self.child.isalive():
            self.child.kill(9)
        self.child.close(force=True)
        self.log.close()

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        if not self.log.closed:
            self.log.close()


class _Tee:
    """pexpect's read log: to the screen log file and to the in-memory transcript."""

    def __init__(self, file: TextIO, screen: list[str]) -> None:
        self._file = file
        self._screen = screen

    def write(self, data: str) -> None:
        self._screen.append(data)
        if not self._file.closed:
            self._file.write(data)

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


_namespaces = itertools.count()


@contextlib.contextmanager
def loopback_only_namespace() -> Iterator[str | None]:
    """A network namespace of the test's own with only loopback up, or None where
    one cannot be made (needs root and iproute2).

    Inside it 255.255.255.255 has no route, and a name lookup cannot leave the
    machine: the resolver's server is out of reach.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("ip") is None:
        yield None
        return
    name = f"pc{os.getpid()}lo{next(_namespaces)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if made.returncode != 0:
        yield None
        return
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        routes = subprocess.run(
            ["ip", "-n", name, "-4", "route", "show"], capture_output=True, text=True, check=True
        )
        assert routes.stdout.strip() == "", "the namespace must have no route"
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def in_namespace(name: str | None) -> Callable[[list[str]], list[str]] | None:
    """A Peer `launch` that runs the command in namespace `name` (None: as it is)."""
    if name is None:
        return None
    return lambda command: ["ip", "netns", "exec", name, *command]


def mount_tmpfs(target: Path, size: str) -> Path:
    """A tmpfs of `size` at `target` (made if missing); see `cannot_set_up` if it cannot be.

    Mounting needs root; the caller unmounts with `unmount`.
    """
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        cannot_set_up(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    return target


def unmount(target: Path) -> None:
    """Unmount `target`, lazily if it is still busy."""
    if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def run_cli(
    args: Sequence[str],
    *,
    timeout: float = 20.0,
    stdin: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run peer_chat.py to completion with piped standard input."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        env=child_env(env),
        check=False,
    )


def run_script(
    args: Sequence[str],
    script: str,
    *,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run peer_chat.py on a script piped to a standard input that stays open.

    End of input quits as 0 does, so with `run_cli` a script whose lines were
    read by the wrong prompts still ends cleanly. Here the script has to reach
    its own `0`: a peer still waiting for input when `timeout` runs out is
    killed and the test fails with what it printed.
    """
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8") as err,
    ):
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            text=True,
            cwd=str(ROOT),
            env=child_env(env),
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(script)
            proc.stdin.flush()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out.seek(0)
            raise AssertionError(
                f"still waiting for input after {timeout} s; it printed:\n{out.read()[-2000:]}"
            ) from None
        finally:
            proc.stdin.close()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


# -- discovery and liveness end to end: reading the screen, watching the port --------


@dataclass(frozen=True)
class PeerRow:
    """One row of option 2's table."""

    number: int
    name: str
    address: str
    short_id: str
    verified: bool
    found: str = ""  # how it was found: "broadcast", "mDNS", "seed", "via NAME", ...


_PEER_ROW = re.compile(
    r"^\s*(\d+)\s+(.+?)\s+(\d{1,3}(?:\.\d{1,3}){3}:\d+)\s+([A-Z2-7]{8})\s+(yes|no)\s+\d+s ago"
    r"(?:\s+(\S.*?))?\s*$"
)
_FULL_FINGERPRINT = r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){12}"


def peer_rows(table: str) -> list[PeerRow]:
    """The rows of a table returned by Peer.peers_table(); other screen lines are ignored."""
    rows: list[PeerRow] = []
    for line in strip_ansi(table).splitlines():
        match = _PEER_ROW.match(line)
        if match:
            number, name, address, sid, verified, found = match.groups()
            rows.append(PeerRow(int(number), name, address, sid, verified == "yes", found or ""))
    return rows


class Screen(Protocol):
    """What the helpers below need of a driven peer (Peer, or one started another way)."""

    name: str
    child: Any

    def choose(self, option: str) -> None: ...

    def expect(self, pattern: str | list[str], timeout: float | None = None) -> int: ...

    def expect_menu(self) -> None: ...


def own_fingerprint(peer: Screen) -> tuple[str, str]:
    """(short ID, full fingerprint as grouped on screen) from option 5."""
    peer.choose("5")
    peer.expect(r"Your ID: ([A-Z2-7]{8})")
    sid = str(peer.child.match.group(1))
    peer.expect(f"({_FULL_FINGERPRINT})")
    full = str(peer.child.match.group(1))
    peer.expect_menu()
    return sid, full


def await_lines(
    waits: Sequence[tuple[Screen, str]], timeout: float, poll: float = 0.02
) -> list[float]:
    """Wait for every (peer, text) at once; the monotonic time each was first seen.

    The screens are polled in turn, so a line is timestamped within a few polls
    of its arrival even while another screen is still being waited for. All the
    texts awaited on one screen are matched in the order they appear, so none
    is skipped over by matching another.
    """
    deadline = time.monotonic() + timeout
    seen: list[float | None] = [None] * len(waits)
    screens: list[Screen] = []
    for peer, _ in waits:
        if all(peer is not known for known in screens):
            screens.append(peer)
    while any(t is None for t in seen):
        for peer in screens:
            pending = [i for i, (p, _) in enumerate(waits) if p is peer and seen[i] is None]
            if not pending:
                continue
            texts = [waits[i][1] for i in pending]
            index = peer.child.expect_exact([*texts, pexpect.TIMEOUT], timeout=poll)
            if index < len(texts):
                seen[pending[index]] = time.monotonic()
        if time.monotonic() > deadline and any(t is None for t in seen):
            missing = [
                f"{p.name}: {t!r}" for (p, t), s in zip(waits, seen, strict=True) if s is None
            ]
            raise AssertionError(f"not seen within {timeout} s: {'; '.join(missing)}")
    return [t for t in seen if t is not None]


def wait_for_log(path: Path, needle: str, *, count: int = 1, timeout: float = 10.0) -> str:
    """The text of a peer's log file once it holds `needle` at least `count` times."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if text.count(needle) >= count:
            return text
        time.sleep(0.05)  # a file has no event to await
    raise AssertionError(f"{path.name}: {needle!r} seen {text.count(needle)} times, not {count}")


class BeaconSniffer:
    """The test's own socket on a discovery port: it sees every beacon and can send one.

    Bound like a peer's (SO_REUSEADDR + SO_REUSEPORT on the same port), so the
    loopback broadcasts reach it as they reach every peer.
    """

    def __init__(self, discovery_port: int) -> None:
        self.port = discovery_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.bind(("", discovery_port))

    def drain(self) -> None:
        """Forget what has queued up, so the next beacon read is a new one."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(65536)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def next_beacon(self, name: str | None = None, timeout: float = 10.0) -> tuple[bytes, Beacon]:
        """The next datagram that decodes as a beacon (from a peer called `name`, if given)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            try:
                beacon = decode_beacon(data)[0]
            except ProtocolError:
                continue
            if name is None or beacon.name == name:
                return data, beacon
        raise AssertionError(f"no beacon from {name or 'anyone'!r} within {timeout} s")

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (LOOPBACK_BROADCAST, self.port))

    def close(self) -> None:
        self.sock.close()


class WatchedPeer(Peer):
    """A Peer that keeps what it printed before its first menu.

    The node starts before the menu is drawn, so a discovery can be printed
    that early; Peer's start-up consumes it, and `seen_at_start` gives it back.
    (The node holds its news until the banner is out, but a test should not
    depend on where exactly among the start-up lines it lands.)
    """

    def __init__(self, name: str, tmp: Path, discovery_port: int | None, **kw: Any) -> None:
        super().__init__(name, tmp, discovery_port, **kw)
        # Everything start-up consumed (before and between its matches), and no
        # more: what is still unread is left for the next expect to find.
        shown, unread = self.screen(), len(self.child.buffer)
        self.banner = strip_ansi(shown[: len(shown) - unread])

    def seen_at_start(self, text: str) -> bool:
        """Whether `text` was printed before the first menu (each such line counts once)."""
        if text not in self.banner:
            return False
        self.banner = self.banner.replace(text, "", 1)
        return True


class WatchedScreen(Screen, Protocol):
    def seen_at_start(self, text: str) -> bool: ...


def await_new_lines(waits: Sequence[tuple[WatchedScreen, str]], timeout: float) -> None:
    """await_lines, counting lines a peer printed before its first menu as seen."""
    await_lines([(p, t) for p, t in waits if not p.seen_at_start(t)], timeout)


class _Named(Protocol):
    name: str
    data_dir: Path


def shown_as(peer: _Named) -> str:
    """How a peer its correspondent has not verified is named on screen: name and short ID."""
    return name_and_id(peer.name, peer.data_dir)


def name_and_id(name: str, data_dir: Path) -> str:
    """`name` and the short ID of the profile in `data_dir`, as an incoming line shows them."""
    public = serialization.load_pem_public_key((data_dir / "public.pem").read_bytes())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{name}, ID {short_id(fingerprint_of(der))}"
