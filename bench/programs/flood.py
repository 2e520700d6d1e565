"""A connection flood against a peer: `flood.py PORT SOURCE KIND MAX_SECONDS [IN_FLIGHT]`.

Keeps IN_FLIGHT connections from SOURCE (a 127.0.0.x address) to
127.0.0.1:PORT open at once, each doing what KIND says, and opens the next as
soon as one ends. Kinds:

- garbage: random bytes (4-511 of them), until the peer closes;
- first: a valid first Noise XX handshake message (36 bytes on the wire, made
  by the project's own channel code), so the peer does its key exchange and
  answers with message 2; the connection ends once message 2 is in;
- junk-after-first: a valid first message and, once message 2 is in, a frame
  of random bytes of a third message's size, until the peer closes;
- junk-identity: a whole handshake whose identity is junk: an RSA-3072 key
  with a 3071-bit public exponent and a random signature, so the peer's one
  check of it costs some 70-85 normal checks; until the peer closes.

Prints "ready" once a first connection went through, floods until standard
input closes (or MAX_SECONDS), then prints "made finished seconds":
connections opened, connections that ran their course (garbage: closed by the
peer; first: message 2 received; junk-after-first: message 2 received, then
closed by the peer; junk-identity: message 3 sent, then closed by the peer).
"""

from __future__ import annotations

import errno
import random
import secrets
import selectors
import socket
import struct
import sys
import threading
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from peerchat.errors import ProtocolError
from peerchat.protocol.channel import Credentials, HandshakeComplete, Role, SecureChannel

HOST = "127.0.0.1"
SOCKET_TIMEOUT = 30.0
KINDS = ("garbage", "first", "junk-after-first", "junk-identity")
JUNK_KEYS = 8  # distinct junk identities, used in turn
JUNK_BITS = 3072  # the largest modulus for which OpenSSL accepts any public exponent
_HEADER = struct.Struct(">I")


def junk_identity_der(rng: random.Random) -> tuple[bytes, bytes]:
    """(SubjectPublicKeyInfo DER, signature) of a junk RSA key: random modulus, huge exponent."""
    modulus = rng.getrandbits(JUNK_BITS) | (1 << (JUNK_BITS - 1)) | 1
    exponent = rng.getrandbits(JUNK_BITS - 1) | (1 << (JUNK_BITS - 2)) | 1
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = rng.randbytes(JUNK_BITS // 8)
    signature = bytes([signature[0] >> 1]) + signature[1:]  # below the modulus: checked in full
    return der, signature


def credentials(identity_der: bytes, signature: bytes) -> Credentials:
    """Credentials that no identity backs: built directly, never signed."""
    return Credentials(
        name="flood",
        listen_port=1,
        identity_der=identity_der,
        static_private=X25519PrivateKey.generate(),
        static_signature=signature,
    )


class Flood:
    def __init__(self, kind: str, rng: random.Random) -> None:
        self.kind = kind
        self.rng = rng
        self.made = 0
        self.finished = 0
        if kind == "junk-identity":
            self.credentials = [credentials(*junk_identity_der(rng)) for _ in range(JUNK_KEYS)]
        else:  # only the first message is sent: no identity is ever looked at
            self.credentials = [credentials(secrets.token_bytes(16), secrets.token_bytes(16))]

    def opening(self) -> tuple[bytes, SecureChannel | None]:
        """The bytes a new connection sends first, and its channel if it goes on."""
        if self.kind == "garbage":
            return self.rng.randbytes(self.rng.randrange(4, 512)), None
        creds = self.credentials[self.made % len(self.credentials)]
        channel = SecureChannel(Role.INITIATOR, creds)
        first = channel.data_to_send()
        return first, channel

    def junk_frame(self) -> bytes:
        """A frame of random bytes the size of a third handshake message."""
        body = self.rng.randbytes(self.rng.randrange(48, 1200))
        return _HEADER.pack(len(body)) + body


class Connection:
    """One flood connection's progress."""

    def __init__(self, sock: socket.socket, channel: SecureChannel | None) -> None:
        self.sock = sock
        self.channel = channel
        self.received = bytearray()
        self.answered = False  # message 2 is in
        self.sent_last = False  # junk-identity: message 3 is out

    def message_2_in(self) -> bool:
        """Whether the whole first frame (message 2) has arrived."""
        if len(self.received) < _HEADER.size:
            return False
        size: int = _HEADER.unpack_from(self.received)[0]
        return len(self.received) >= _HEADER.size + size


def run(
    flood: Flood, port: int, source: str, in_flight: int, max_seconds: float, stop: threading.Event
) -> None:
    deadline = time.monotonic() + max_seconds
    open_: dict[int, Connection] = {}
    with selectors.DefaultSelector() as selector:

        def end(conn: Connection, finished: bool) -> None:
            selector.unregister(conn.sock)
            del open_[conn.sock.fileno()]
            conn.sock.close()
            flood.finished += finished

        while not stop.is_set() and time.monotonic() < deadline:
            while len(open_) < in_flight:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((source, 0))
                flood.made += 1
                if sock.connect_ex((HOST, port)) not in (0, errno.EINPROGRESS):
                    sock.close()
                    break  # out of ports or refused: select, then try again
                selector.register(sock, selectors.EVENT_WRITE, "connecting")
                open_[sock.fileno()] = Connection(sock, None)
            for key, _ in selector.select(0.1):
                conn = open_[key.fd]
                if key.data == "connecting":
                    data, conn.channel = flood.opening()
                    try:
                        conn.sock.send(data)
                    except OSError:
                        end(conn, False)
                        continue
                    selector.modify(conn.sock, selectors.EVENT_READ, "sent")
                    continue
                try:
                    data = conn.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the peer closed the connection
                    ran_course = {
                        "garbage": True,
                        "first": False,  # closed before message 2 came
                        "junk-after-first": conn.answered,
                        "junk-identity": conn.sent_last,
                    }[flood.kind]
                    end(conn, ran_course)
                    continue
                conn.received += data
                if not conn.answered and conn.message_2_in():
                    conn.answered = True
                    if flood.kind == "first":
                        end(conn, True)
                        continue
                    if flood.kind == "junk-after-first":
                        try:
                            conn.sock.send(flood.junk_frame())
                        except OSError:
                            end(conn, False)
                        continue
                if flood.kind == "junk-identity" and conn.channel is not None:
                    try:
                        events = conn.channel.receive_data(data)
                    except ProtocolError:
                        end(conn, False)
                        continue
                    if any(isinstance(e, HandshakeComplete) for e in events):
                        try:
                            conn.sock.send(conn.channel.data_to_send())  # message 3
                        except OSError:
                            end(conn, False)
                            continue
                        conn.sent_last = True
        for conn in list(open_.values()):
            conn.sock.close()


def main(argv: list[str]) -> None:
    port, source, kind, max_seconds = int(argv[0]), argv[1], argv[2], float(argv[3])
    in_flight = int(argv[4]) if len(argv) > 4 else 32
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    flood = Flood(kind, random.Random(1))
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # One connection first, so "ready" means the flood reaches the peer.
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT, source_address=(source, 0)):
        pass
    print("ready", flush=True)
    start = time.monotonic()
    run(flood, port, source, in_flight, max_seconds, stop)
    print(f"{flood.made} {flood.finished} {time.monotonic() - start:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
