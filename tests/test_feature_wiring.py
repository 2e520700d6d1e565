"""The features attach to the session owner's hooks: each message kind has one handler, and
"verified" is written in one place, to the store and the active list at once."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

import pytest

from crypto_utils import Identity, Sealer
from peerchat.events import FileOutcome, UiEvent
from peerchat.net.file_store import inspect_source
from peerchat.net.file_wiring import Dial, FileWiring
from peerchat.net.reach import Reach
from peerchat.net.reach_wiring import attach_reach
from peerchat.net.session import Session
from peerchat.net.transfers import TransferSettings
from peerchat.net.trust_book import TrustBook
from peerchat.net.verification_wiring import VerificationWiring
from peerchat.policy.presence import Presence
from peerchat.policy.session_table import AdmissionLimits, SessionTable
from peerchat.protocol.channel import PeerHello
from peerchat.protocol.messages import (
    Ack,
    Bye,
    Chat,
    ConnectNotice,
    Message,
    PeerExchange,
    Ping,
    Pong,
)
from peerchat.protocol.transfer import TRANSFER_MESSAGE_TYPES
from storage import HistoryStore

# What the session owner handles itself; every other kind is a feature's.
CORE_KINDS = {Chat, Ack, Ping, Pong, Bye, ConnectNotice}


class RecordingHooks:
    """The session owner's extension points, recording who attached what."""

    def __init__(self) -> None:
        self.routes: dict[type[Message], list[Callable[[Session, str, Message], None]]] = {}
        self.up: list[Callable[[Session, str], None]] = []
        self.down: list[Callable[[str], None]] = []
        self.writable: list[Callable[[Session, str], None]] = []
        self.announcements: list[Callable[[Session], UiEvent | None]] = []

    def route(
        self, kinds: Iterable[type[Message]], handler: Callable[[Session, str, Message], None]
    ) -> None:
        for kind in kinds:
            self.routes.setdefault(kind, []).append(handler)

    def on_session_up(self, listener: Callable[[Session, str], None]) -> None:
        self.up.append(listener)

    def on_session_down(self, listener: Callable[[str], None]) -> None:
        self.down.append(listener)

    def on_writable(self, listener: Callable[[Session, str], None]) -> None:
        self.writable.append(listener)

    def announce_with(self, announcement: Callable[[Session], UiEvent | None]) -> None:
        self.announcements.append(announcement)


class ReachStandIn:
    """Reach's answers to the session owner (attach_reach only hands them over)."""

    def exchange_received(self, session: Session, fp: str, message: Message) -> None: ...

    def session_up(self, session: Session, fp: str) -> None: ...

    def session_down(self, fp: str) -> None: ...

    def announcement(self, session: Session) -> UiEvent | None:
        return None


@pytest.fixture(scope="module")
def bob() -> Identity:
    return Identity.generate(2048)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "history.db", Sealer.generate()) as opened:
        yield opened


def table() -> SessionTable[Session]:
    return SessionTable("a" * 64, AdmissionLimits(8, 8, 8, 8))


def verification_wiring(
    loop: asyncio.AbstractEventLoop, store: HistoryStore
) -> tuple[VerificationWiring, TrustBook, Presence]:
    trust = TrustBook(store, lambda _: None, lambda: None)
    trust.load()
    presence = Presence(30.0, trust.is_verified)
    wiring = VerificationWiring(
        loop, "a" * 64, table(), trust, presence, emit=lambda _: None, poke=lambda: None
    )
    return wiring, trust, presence


def test_every_message_kind_has_one_handler_once_all_features_attach(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, store: HistoryStore
) -> None:
    hooks = RecordingHooks()
    files = FileWiring(
        loop,
        store,
        TransferSettings(downloads=tmp_path / "downloads"),
        sessions=table(),
        emit=lambda _: None,
        poke=lambda: None,
    )
    verification, _, _ = verification_wiring(loop, store)

    reach = ReachStandIn()
    attach_reach(cast(Reach, reach), hooks)
    files.attach(hooks, Dial(str, lambda fp: [], _never_dialled, lambda fp, **kw: None))
    verification.attach(hooks)

    assert not any(len(handlers) > 1 for handlers in hooks.routes.values())
    assert set(hooks.routes) | CORE_KINDS == set(typing.get_args(Message))
    assert not set(hooks.routes) & CORE_KINDS  # the owner's own kinds stay its own
    assert hooks.routes[PeerExchange] == [reach.exchange_received]
    assert all(hooks.routes[kind] == [files.received] for kind in TRANSFER_MESSAGE_TYPES)
    # Each feature hears of sessions; only files wait for a drained buffer; reach announces.
    assert (len(hooks.up), len(hooks.down), len(hooks.writable)) == (3, 3, 1)
    assert len(hooks.announcements) == 1


def test_marking_a_listed_peer_verified_shows_in_the_store_and_the_listing_at_once(
    loop: asyncio.AbstractEventLoop, store: HistoryStore, bob: Identity
) -> None:
    wiring, trust, presence = verification_wiring(loop, store)
    hello = PeerHello("Bob", 5001, bob.public_der, bob.fingerprint, 1)
    assert trust.admit_hello(hello, "127.0.0.1", 5001) is None
    presence.session_up(bob.fingerprint, "Bob", "127.0.0.1", 5001, now=0.0, wall=0.0)
    assert [p.verified for p in presence.listing()] == [False]

    wiring.mark_verified(bob.fingerprint)

    assert [p.verified for p in presence.listing()] == [True]
    record = store.get_peer(bob.fingerprint)
    assert record is not None and record.verified
    assert trust.is_verified(bob.fingerprint, "Bob")


def test_marking_an_unlisted_peer_verified_writes_the_store_only(
    loop: asyncio.AbstractEventLoop, store: HistoryStore, bob: Identity
) -> None:
    wiring, trust, presence = verification_wiring(loop, store)
    hello = PeerHello("Bob", 5001, bob.public_der, bob.fingerprint, 1)
    assert trust.admit_hello(hello, "127.0.0.1", 5001) is None

    wiring.mark_verified(bob.fingerprint)

    assert presence.listing() == []
    record = store.get_peer(bob.fingerprint)
    assert record is not None and record.verified


async def _never_dialled(host: str, port: int) -> Session:
    raise AssertionError("no dial expected")


def test_option_11_dials_a_known_peer_only_where_the_dial_says_then_offers(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, store: HistoryStore
) -> None:
    files = FileWiring(
        loop,
        store,
        TransferSettings(downloads=tmp_path / "downloads"),
        sessions=table(),
        emit=lambda _: None,
        poke=lambda: None,
    )
    dialled: list[tuple[str, int]] = []
    wanted: list[str] = []

    async def open_session(host: str, port: int) -> Session:
        dialled.append((host, port))
        raise ConnectionRefusedError

    where = {"b" * 64: [("127.0.0.1", 5001), ("127.0.0.1", 5002)]}
    files.attach(
        RecordingHooks(),
        Dial(lambda fp: "Bob", lambda fp: where.get(fp, []), open_session, _want(wanted)),
    )
    source = tmp_path / "notes.txt"
    source.write_bytes(b"x" * 1000)

    result = loop.run_until_complete(files.offer("b" * 64, inspect_source(source)))

    assert dialled == where["b" * 64]  # both tried, failures are the reconnector's business
    assert result.outcome is FileOutcome.QUEUED
    assert wanted == ["b" * 64]  # the offer waits for the peer's next session


def _want(wanted: list[str]) -> Callable[..., None]:
    def want(fp: str, *, at_once: bool = False) -> None:
        assert at_once
        wanted.append(fp)

    return want
