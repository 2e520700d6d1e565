"""Real peer_chat processes for tests, driven as a person would drive them.

Every peer gets its own data folder, a free TCP port, and discovery on the
loopback broadcast address 127.255.255.255 with a discovery port chosen per
test, so no test traffic ever leaves this machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "peer_chat.py"
LOOPBACK_BROADCAST = "127.255.255.255"
PROMPT = "Enter choice:"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
) -> list[str]:
    args = [str(SCRIPT), "--name", name, "--port", str(port), "--data-dir", str(data_dir)]
    if discovery_port is None:
        args.append("--no-discovery")
    else:
        args += [
            "--broadcast",
            LOOPBACK_BROADCAST,
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
    ) -> None:
        self.name = name
        self.port = port or free_tcp_port()
        self.data_dir = data_dir or tmp / name
        self.addr = f"127.0.0.1:{self.port}"
        args = peer_args(
            name,
            self.port,
            self.data_dir,
            discovery_port,
            peer_timeout=peer_timeout,
            beacon_interval=beacon_interval,
            extra=extra,
        )
        self.log = open(tmp / f"{name}-{self.port}.screen.log", "a", encoding="utf-8")  # noqa: SIM115
        self.child = pexpect.spawn(
            sys.executable,
            args,
            cwd=str(ROOT),
            env=child_env(env),
            encoding="utf-8",
            timeout=timeout,
            dimensions=(50, 200),
        )
        self.child.logfile_read = self.log
        self.child.expect(f"Server listening on port {self.port}")
        self.expect_menu()

    def expect(self, pattern: str | list[str], timeout: float | None = None) -> int:
        return int(self.child.expect(pattern, timeout=timeout if timeout is not None else -1))

    def expect_text(self, text: str, timeout: float | None = None) -> None:
        self.child.expect_exact(text, timeout=timeout if timeout is not None else -1)

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
        self.choose("3")
        self.answer("Show history with (name or number, empty for everyone):", who)
        self.expect(["oldest first:", "No messages."])
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


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def run_cli(
    args: Sequence[str], *, timeout: float = 20.0, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run peer_chat.py to completion with piped standard input."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        env=child_env(),
        check=False,
    )
