"""A real node whose handshakes from one address keep failing, with a peer it knows there.

Everything here comes from 127.0.0.1, as every peer of a test does: the
node must refuse the address once its failed handshakes are spent, and still
let a key it knows in from the same address (its reserve).
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto_utils import Identity
from peerchat.errors import ProtocolError
from peerchat.limits import HANDSHAKE_FAILURE_BURST
from peerchat.protocol.channel import (
    ChannelState,
    Credentials,
    MessageReceived,
    Role,
    SecureChannel,
)
from peerchat.protocol.messages import Ack, Chat, new_msg_id
from tests.support import free_tcp_port
from tests.test_node import Running, make_node

HOST = "127.0.0.1"
PATIENCE = 0.5  # seconds a handshake waits for the node's message 2 before it counts as refused


def junk_credentials() -> Credentials:
    """An identity no key backs: random bytes where the key and its signature go."""
    return Credentials(
        name="Junk",
        listen_port=7000,
        identity_der=secrets.token_bytes(300),
        static_private=X25519PrivateKey.generate(),
        static_signature=secrets.token_bytes(256),
    )


class Client:
    """One connection to the node as initiator, from 127.0.0.1."""

    def __init__(self, port: int, credentials: Credentials) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=5.0)
        self.channel = SecureChannel(Role.INITIATOR, credentials)
        self.sock.sendall(self.channel.data_to_send())  # message 1

    def handshake(self, patience: float = PATIENCE) -> bool:
        """Message 2 in, message 3 out; False if the node closed or said nothing in time."""
        try:
            self.sock.settimeout(patience)
            data = self.sock.recv(65536)
            if not data:
                return False
            self.sock.settimeout(5.0)
            self.channel.receive_data(data)
            while self.channel.state is ChannelState.HANDSHAKING:
                more = self.sock.recv(65536)
                if not more:
                    return False
                self.channel.receive_data(more)
            self.sock.sendall(self.channel.data_to_send())
        except (OSError, ProtocolError):  # a reset or a timeout: refused
            return False
        return True

    def closed_by_node(self) -> bool:
        """Whether the node closes the connection within a few seconds."""
        self.sock.settimeout(5.0)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:  # a reset
            pass
        return True

    def chat(self, text: str) -> None:
        """Send `text` and wait for its acknowledgement."""
        chat = Chat(new_msg_id(time.time()), time.time(), text)
        self.channel.send_message(chat)
        self.sock.sendall(self.channel.data_to_send())
        self.sock.settimeout(5.0)
        while True:
            data = self.sock.recv(65536)
            assert data, "the node closed the session before acknowledging"
            for event in self.channel.receive_data(data):
                message = event.message if isinstance(event, MessageReceived) else None
                if isinstance(message, Ack) and chat.msg_id in message.msg_ids:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[Running]:
    running = make_node(tmp_path, "Alice")
    yield running
    running.close()


@pytest.fixture(scope="module")
def bob() -> Credentials:
    return Credentials.create(Identity.generate(2048), "Bob", free_tcp_port())


def test_a_known_peer_gets_in_from_an_address_whose_handshakes_keep_failing(
    alice: Running, bob: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="peerchat.net.peer_sessions")
    # Bob meets Alice, then comes back: from then on his is a key she knows at 127.0.0.1.
    for text in ("first contact", "back again"):
        client = Client(alice.port, bob)
        assert client.handshake(patience=5.0)
        client.chat(text)
        alice.wait_for_text(text)
        client.close()

    # Junk handshakes from the same address, more at once than it may fail: all are
    # under way before the first fails, so the address goes into debt.
    junk = [Client(alice.port, junk_credentials()) for _ in range(2 * HANDSHAKE_FAILURE_BURST)]
    for client in junk:
        assert client.handshake(patience=5.0), "a junk handshake was refused before any failed"
        assert client.closed_by_node(), "a junk identity was accepted"
        client.close()
    # Now the address is refused (the first try may still be let in by its reserve).
    for _ in range(3):
        probe = Client(alice.port, junk_credentials())
        refused = not probe.handshake()
        probe.close()
        if refused:
            break
    assert "refusing connections from 127.0.0.1" in caplog.text

    # Bob tries again as a reconnecting peer does, and gets in through the reserve long
    # before the address's budget has refilled (its cool-down would end with a log line).
    for _ in range(10):
        client = Client(alice.port, bob)
        if client.handshake():
            break
        client.close()
    else:
        pytest.fail("Bob never got in during the cool-down")
    client.chat("through the cool-down")
    alice.wait_for_text("through the cool-down")
    client.close()
    assert "admitting 127.0.0.1 again" not in caplog.text


def test_connections_held_in_a_cool_down_are_closed_when_the_node_quits(
    alice: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held for longer than the test waits, so only the quit can close it in time.
    monkeypatch.setattr("peerchat.net.peer_sessions.REFUSED_HOLD", 60.0)
    junk = [Client(alice.port, junk_credentials()) for _ in range(2 * HANDSHAKE_FAILURE_BURST)]
    for client in junk:
        client.handshake(patience=5.0)
        client.closed_by_node()
        client.close()
    held = [Client(alice.port, junk_credentials()) for _ in range(3)]
    for client in held:
        assert not client.handshake(), "a connection was let in during the cool-down"
    alice.node.close()
    try:
        assert all(client.closed_by_node() for client in held), "a held connection outlived quit"
    finally:
        for client in held:
            client.close()
