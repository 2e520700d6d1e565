"""File transfers follow the peer's current session, including one that replaces another."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from crypto_utils import Sealer
from peerchat.events import FileOutcome, UiEvent
from peerchat.net.file_store import inspect_source
from peerchat.net.file_wiring import FileWiring
from peerchat.net.session import Session
from peerchat.net.transfers import TransferSettings
from peerchat.policy.session_table import AdmissionLimits, SessionTable
from peerchat.protocol.channel import Role
from peerchat.protocol.messages import Message
from peerchat.protocol.transfer import FileOffer
from storage import HistoryStore

BOB = "b" * 64


@dataclass
class Hello:
    name: str


class FakeSession:
    role = Role.INITIATOR
    remote_ip = "127.0.0.1"
    established = True
    closed = False
    transport = None

    def __init__(self) -> None:
        self.peer = Hello("Bob")
        self.sent: list[Message] = []

    def send(self, messages: list[Message]) -> None:
        self.sent.extend(messages)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_an_offer_goes_again_on_the_session_that_replaces_the_current_one(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = HistoryStore.open(tmp_path / "history.db", Sealer.generate())
    table: SessionTable[Session] = SessionTable("a" * 64, AdmissionLimits(8, 8, 8))
    events: list[UiEvent] = []
    files = FileWiring(
        loop,
        store,
        TransferSettings(downloads=tmp_path / "downloads"),
        sessions=table,
        emit=events.append,
        poke=lambda: None,
    )
    source = tmp_path / "notes.txt"
    source.write_bytes(os.urandom(1000))
    assert files.next_due() is None  # nothing to do: no timer at all

    first, second = FakeSession(), FakeSession()
    for fake in (first, second):
        assert table.admit(cast(Session, fake)) is None
    table.settle(BOB, cast(Session, first))
    files.session_up(cast(Session, first), BOB)
    result = loop.run_until_complete(
        files.send_file(
            BOB,
            inspect_source(source),
            name_of=lambda fp: "Bob",
            addresses=[],
            open_session=lambda host, port: pytest.fail("already connected"),
            want_reconnect=lambda fp, **kw: pytest.fail("already connected"),
        )
    )
    assert result.outcome is FileOutcome.OFFERED
    assert [type(m) for m in first.sent] == [FileOffer]
    assert files.next_due() is not None  # a connected peer with a transfer under way

    # The second session wins a duplicate tie-break: the first is gone with the offer.
    table.remove(cast(Session, first), BOB)
    table.settle(BOB, cast(Session, second))
    files.session_up(cast(Session, second), BOB)
    assert [type(m) for m in second.sent] == [FileOffer]
    store.close()
