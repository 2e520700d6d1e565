"""Stand-ins for the programs around the original chat.py, written from their description.

Each speaks one of the legacy formats with plain blocking sockets, one TCP
connection per message (or several lines per connection where that program
does so), as those programs do:

- `send_plain` / `PlainSender`: `SENDER_IP:SENDER_PORT TEAM MESSAGE`, or the
  angle-bracket variant `<SENDER_IP:SENDER_PORT> <TEAM> <MESSAGE>`, with or
  without a trailing newline, then close.
- `LinesSender`: several newline-terminated messages on one connection.
- `BlockSender`: `<IP:PORT> @ NAME`, the message's lines, `<end>`; leaves
  with `<IP:PORT> DISCONNECT`.
- `OriginalSender`: the original's one Fernet token per connection, plaintext
  `SENDER_IP:SENDER_PORT CryptoCrafters MESSAGE`.
- `LegacyListener`: accepts connections and keeps what each one carried;
  `read_once=True` reads a single recv(1024) as the original does.
- `original_beacon` / `BeaconListener`: the original's UDP beacon, a token of
  `NAME:PORT`, and a socket on the discovery port that hears them.
- `probe`: a zero-byte liveness probe (connect, close).

They only ever talk to loopback addresses given by the test.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from cryptography.fernet import Fernet

ORIGINAL_TEAM = "CryptoCrafters"
ORIGINAL_READ = 1024


def _connect(host: str, port: int, source: str | None, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def send_raw(
    host: str,
    port: int,
    data: bytes,
    *,
    source: str | None = None,
    timeout: float = 5.0,
    until_closed: bool = True,
) -> None:
    """One connection carrying `data`, then closed (as every one-shot sender does).

    With `until_closed` the sender then waits for the receiver to close its
    side (a reset counts), which the programs do not need but a test does: by
    then the receiver has read and handled everything sent.
    """
    with _connect(host, port, source, timeout) as sock:
        try:
            sock.sendall(data)
            if until_closed:
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
        except OSError:  # reset, or already shut by the receiver: it has stopped reading
            pass


def probe(host: str, port: int, *, source: str | None = None, until_closed: bool = True) -> None:
    """Connect and close without a byte: the liveness probe some programs use."""
    send_raw(host, port, b"", source=source, until_closed=until_closed)


def plain_line(
    claimed: str, team: str, text: str, *, angle: bool = False, newline: bool = False
) -> bytes:
    """`claimed` is the SENDER_IP:SENDER_PORT the text names."""
    line = f"<{claimed}> <{team}> <{text}>" if angle else f"{claimed} {team} {text}"
    return (line + ("\n" if newline else "")).encode()


@dataclass
class PlainSender:
    """A one-shot plain-text program listening (it says) at `claimed`."""

    claimed: str
    team: str
    angle: bool = False
    newline: bool = False
    source: str | None = None  # the local address to send from

    def send(self, host: str, port: int, text: str) -> None:
        data = plain_line(self.claimed, self.team, text, angle=self.angle, newline=self.newline)
        send_raw(host, port, data, source=self.source)


@dataclass
class LinesSender:
    """A program that writes several newline-terminated messages on one connection."""

    claimed: str
    team: str
    source: str | None = None

    def send_all(self, host: str, port: int, texts: list[str]) -> None:
        data = b"".join(plain_line(self.claimed, self.team, t, newline=True) for t in texts)
        send_raw(host, port, data, source=self.source)


@dataclass
class BlockSender:
    """The program that frames a message between `<IP:PORT> @ NAME` and `<end>`."""

    claimed: str
    name: str
    source: str | None = None

    def block(self, lines: list[str]) -> bytes:
        body = "".join(f"{line}\n" for line in lines)
        return f"<{self.claimed}> @ {self.name}\n{body}<end>\n".encode()

    def send(self, host: str, port: int, lines: list[str]) -> None:
        send_raw(host, port, self.block(lines), source=self.source)

    def leave(self, host: str, port: int) -> None:
        send_raw(host, port, f"<{self.claimed}> DISCONNECT\n".encode(), source=self.source)


@dataclass
class OriginalSender:
    """The original chat.py sending: one Fernet token per connection."""

    key: bytes
    claimed: str
    team: str = ORIGINAL_TEAM
    source: str | None = None

    def token(self, text: str) -> bytes:
        return Fernet(self.key).encrypt(f"{self.claimed} {self.team} {text}".encode())

    def send(self, host: str, port: int, text: str) -> None:
        send_raw(host, port, self.token(text), source=self.source)


@dataclass
class Received:
    peer_ip: str  # the source address of the connection
    data: bytes


@dataclass
class LegacyListener:
    """A legacy program's listening side: keeps each connection's bytes.

    `read_once` reads a single recv(ORIGINAL_READ) and closes, as the original
    does; otherwise it reads to the end of the stream.
    """

    host: str = "127.0.0.1"
    read_once: bool = False
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((self.host, 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5.0)
                data = b""
                try:
                    if self.read_once:
                        data = conn.recv(ORIGINAL_READ)
                    else:
                        while chunk := conn.recv(65536):
                            data += chunk
                except OSError:
                    pass
            with self._arrived:
                self.received.append(Received(str(addr[0]), data))
                self._arrived.notify_all()

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The first `count` connections' contents, once they have arrived."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} connection(s), not {count}")
            return list(self.received[:count])

    def close(self) -> None:
        self._sock.close()


def parse_plain(data: bytes) -> tuple[str, str, str]:
    """(SENDER_IP:SENDER_PORT, TEAM, MESSAGE) of a plain line, as a plain receiver splits it."""
    claimed, team, text = data.decode().rstrip("\n").split(" ", 2)
    return claimed, team, text


def original_beacon(key: bytes, name: str, port: int) -> bytes:
    return Fernet(key).encrypt(f"{name}:{port}".encode())


def send_original_beacon(key: bytes, name: str, port: int, broadcast: str, dport: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(original_beacon(key, name, port), (broadcast, dport))


class BeaconListener:
    """The original's beacon listener on the discovery port (shared, as peers share it)."""

    def __init__(self, key: bytes, discovery_port: int) -> None:
        self._fernet = Fernet(key)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind(("", discovery_port))

    def next_beacon(self, timeout: float = 10.0) -> tuple[str, str, int]:
        """(source IP, NAME, PORT) of the next datagram the original could decrypt."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(ORIGINAL_READ)
            except TimeoutError:
                break
            try:
                name, port = self._fernet.decrypt(data).decode().rsplit(":", 1)
            except Exception:  # the original skips what it cannot read
                continue
            return str(addr[0]), name, int(port)
        raise AssertionError(f"no beacon the original can read within {timeout} s")

    def close(self) -> None:
        self.sock.close()
