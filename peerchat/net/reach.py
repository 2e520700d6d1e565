"""Reach: peers beyond the broadcast domain, through seeds, peer exchange and mDNS.

The role that feeds the node's address book with claims and dials from it
(the session owner records confirmations in the same book). What it hears is a
claim about a key (a beacon, an mDNS record, a peer-exchange record, an
inbound session); what it dials is what the book says is due (seeds, claims
to confirm, confirmed addresses of keys that are around); only a handshake
we initiated confirms a key at an address. A peer reached this way is listed
by the session like any other and announced as discovered.

Timed by the alarm: `next_due` is the earliest of the book's next dial and
the next peer-exchange send; `handle_timer` starts the dials and sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Final

import ifaddr

from crypto_utils import Identity
from discovery import broadcast_targets
from peerchat.delivery import Delivery
from peerchat.events import ActivePeer, PeerConnected, PeerDiscovered, Problem, UiEvent
from peerchat.limits import PEX_SELF_INTERVAL
from peerchat.net.alarm import earliest
from peerchat.net.config import NodeConfig
from peerchat.net.connector import ANY_CONNECT_FAILURE, Connector, describe
from peerchat.net.mdns import MdnsGone, MdnsHint, MdnsRole, scope_for
from peerchat.net.seeds import SeedLookupError, SeedStore, resolve_seed
from peerchat.net.session import Session
from peerchat.net.trust_book import TrustBook
from peerchat.policy.address_book import (
    AddressBook,
    Dial,
    DialKind,
    Found,
    Source,
    sources_text,
)
from peerchat.policy.seed_address import Seed, is_ipv4
from peerchat.policy.session_table import SessionTable
from peerchat.protocol.beacon import INSTANCE_SIZE
from peerchat.protocol.channel import Role
from peerchat.protocol.messages import Message, PeerExchange
from peerchat.protocol.pex import RELAY_HOLD, OwnBeacon, PeerExchangeState

log = logging.getLogger(__name__)

Address = tuple[str, int]

# Found that way, a peer is announced as discovered when its session lists it.
_REACHED_BY: Final = frozenset({Found.MDNS, Found.SEED, Found.EXCHANGE})
_HOLD_MARGIN: Final = 0.1  # the hold is on the wall clock, the alarm on the loop's
MDNS_CLOSE_BUDGET: Final = 0.5  # seconds of the node's close spent on mDNS goodbyes


class Reach:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        identity: Identity,
        config: NodeConfig,
        sessions: SessionTable[Session],
        trust_book: TrustBook,
        book: AddressBook,
        delivery: Delivery,
        connector: Connector,
        seeds: SeedStore | None,
        emit: Callable[[UiEvent], None],
        poke: Callable[[], None],
        has_work: Callable[[str], bool] = lambda fp: False,
    ) -> None:
        self._loop = loop
        self._identity = identity
        self._has_work = has_work  # work besides queued messages (a file transfer)
        self._config = config
        self._sessions = sessions
        self._trust = trust_book
        self._delivery = delivery
        self._connector = connector
        self._seeds = seeds
        self._emit = emit
        self._poke = poke
        self.book = book  # shared: the session owner confirms, this role claims and dials
        self._own: OwnBeacon | None = None
        self.pex: PeerExchangeState | None = None
        if config.peer_exchange:
            self.pex = PeerExchangeState(
                identity.fingerprint,
                self._sign_own,
                refused_addresses=broadcast_targets(config.broadcast),
            )
        self._pex_due: float | None = None
        # New sessions on which the exchange holds relays back (pex.RELAY_HOLD): until when.
        self._held_until: dict[str, float] = {}
        self._mdns: MdnsRole | None = None
        self._seed_at: dict[Address, Seed] = {}
        self._dialling: dict[Address, asyncio.Task[None]] = {}
        self._closed = False

    # -- start and stop (in the loop) ------------------------------------------------

    async def start(self, instance: bytes | None) -> None:
        """Seeds into the book, and mDNS if configured; `instance`: the discovery run's nonce."""
        cfg = self._config
        self._own = OwnBeacon(
            self._identity, cfg.name, cfg.port, instance or secrets.token_bytes(INSTANCE_SIZE)
        )
        if self._seeds is not None:
            seeds = self._seeds
            seeds.subscribe(self._seed_removed_elsewhere)
            for entry in seeds.seeds():
                if is_ipv4(entry.seed.host) or entry.address is None:
                    self._add_seed(entry.seed, entry.address or entry.seed.host)
                else:
                    self._loop.create_task(self._resolve(entry.seed, entry.address))
        if cfg.mdns and cfg.discovery:
            scope = scope_for(cfg.broadcast, ifaddr.get_adapters())
            if scope is None:
                log.info("mDNS: no interface within the broadcast address's reach")
                return
            role = MdnsRole(
                fingerprint=self._identity.fingerprint,
                name=cfg.name,
                port=cfg.port,
                scope=scope,
                on_hint=self._on_mdns,
            )
            if await role.start():
                self._mdns = role

    async def close(self) -> None:
        self._closed = True
        for task in self._dialling.values():
            task.cancel()
        mdns, self._mdns = self._mdns, None
        if mdns is not None:
            # Its goodbyes take longer than the node may wait for its close: send what fits.
            closing = self._loop.create_task(mdns.close())
            with contextlib.suppress(Exception):
                await asyncio.wait({closing}, timeout=MDNS_CLOSE_BUDGET)

    # -- what the network says (claims) ------------------------------------------------

    def beacon_heard(self, fp: str, host: str, port: int, name: str) -> None:
        """A beacon whose key may be listed (the trust book has judged it)."""
        if self.book.claim(fp, (host, port), Source(Found.BROADCAST), self._loop.time(), name):
            self._poke()

    def _on_mdns(self, hint: MdnsHint | MdnsGone) -> None:
        if not isinstance(hint, MdnsHint) or self._closed:
            return  # a goodbye: liveness takes the peer off the list, the claim ages out
        if hint.name is not None and self._trust.pinned_to_another(hint.name, hint.fingerprint):
            return  # a name pinned to another key: not worth a dial (no conflict for a hint)
        where = (hint.host, hint.port)
        self.book.claim(hint.fingerprint, where, Source(Found.MDNS), self._loop.time(), hint.name)
        self._poke()

    def exchange_received(self, session: Session, fp: str, message: Message) -> None:
        """A PeerExchange from a peer's current session (routed here by the session owner)."""
        assert isinstance(message, PeerExchange)
        if self.pex is None or session.peer is None:
            return
        now = self._loop.time()
        via = Source(Found.EXCHANGE, via=fp, via_name=session.peer.name)
        for hint in self.pex.receive(fp, session.remote_ip, message, time.time()):
            if self._trust.pinned_to_another(hint.name, hint.fingerprint):
                continue
            self.book.claim(hint.fingerprint, (hint.host, hint.port), via, now, hint.name)
        self._pex_soon(now)  # its own beacon may be news for our other peers

    # -- sessions ----------------------------------------------------------------------

    def session_up(self, session: Session, fp: str) -> None:
        hello, listen = session.peer, session.listen_address
        assert hello is not None and listen is not None
        now = self._loop.time()
        dialled = session.dialled
        if session.role is Role.INITIATOR and dialled is not None:
            # The session owner has confirmed the key at `dialled` in the shared book.
            seed = self._seed_at.get(dialled)
            if seed is not None and self._seeds is not None:
                # Written to the profile with fsync: off the loop.
                self._loop.run_in_executor(
                    None, self._seeds.reached, seed, dialled[0], fp, hello.name, time.time()
                )
        else:
            self.book.claim(fp, listen, Source(Found.INBOUND), now, hello.name)
        if self.pex is not None:
            self.pex.session_up(fp, *(self.book.best(fp) or listen))
            if self._identity.fingerprint > fp:  # the end that holds its relays a while
                self._held_until[fp] = now + RELAY_HOLD + _HOLD_MARGIN
            self._pex_soon(now)

    def session_down(self, fp: str) -> None:
        self._held_until.pop(fp, None)
        if self.pex is not None:
            self.pex.session_down(fp)
        self._poke()  # its addresses may be due for a reconnect

    def announcement(self, session: Session) -> UiEvent | None:
        """How a peer newly listed by `session` is announced: found by reach, it is discovered."""
        hello, listen = session.peer, session.listen_address
        if hello is None or listen is None:
            return None
        kinds = {source.kind for source in self.book.sources(hello.fingerprint)}
        if session.dialled in self._seed_at or kinds & _REACHED_BY:
            return PeerDiscovered(hello.name, *listen)
        if session.role is Role.RESPONDER:
            return PeerConnected(hello.name, *listen)
        return None

    def describe(self, peers: list[ActivePeer]) -> list[ActivePeer]:
        """Option 2's listing, each peer with how it was found."""
        for peer in peers:
            peer.found = sources_text(self.book.found_by(peer.fingerprint))
        return peers

    # -- the timer -----------------------------------------------------------------------

    def next_due(self) -> float | None:
        connected = {fp for fp, _ in self._sessions.live()}
        return earliest([self.book.next_due(self._loop.time(), connected), self._pex_due])

    def handle_timer(self, now: float) -> None:
        if self._closed:
            return
        connected = {fp for fp, _ in self._sessions.live()}
        for dial in self.book.due(now, connected):
            self._start_dial(dial)
        if self.pex is not None and self._pex_due is not None and self._pex_due <= now:
            self._send_exchange(now)

    def _wants_session(self, fp: str) -> bool:
        return bool(self._delivery.pending_count(fp)) or self._has_work(fp)

    def _start_dial(self, dial: Dial) -> None:
        if dial.kind is DialKind.RECONNECT and not (
            self.pex is not None
            or (dial.fingerprint is not None and self._wants_session(dial.fingerprint))
        ):
            return  # nothing to say and nobody to pass on: no session needed
        if dial.address in self._dialling or self._connector.is_self(*dial.address):
            return
        task = self._loop.create_task(self._dial(dial))
        self._dialling[dial.address] = task

    async def _dial(self, dial: Dial) -> None:
        try:
            await self._connector.open_session(*dial.address)
        except ANY_CONNECT_FAILURE as exc:
            log.info("dial %s (%s) failed: %s", dial.address, dial.kind.value, describe(exc))
            seed = self._seed_at.get(dial.address)
            if self.book.dial_failed(dial.address) and seed is not None:
                self._emit(
                    Problem(
                        f"Seed peer {seed} is not reachable ({describe(exc)}); "
                        "it is tried again while it is away."
                    )
                )
        finally:
            self._dialling.pop(dial.address, None)
            self._poke()

    def _send_exchange(self, now: float) -> None:
        assert self.pex is not None
        for fp, message in self.pex.outgoing(time.time()):
            session = self._sessions.get(fp)
            if session is not None:
                session.send([message])
        # Again when a held relay may go, else when the next own beacon is due.
        self._held_until = {fp: t for fp, t in self._held_until.items() if t > now}
        relayable = set(self.pex.relayable())
        held = [t for fp, t in self._held_until.items() if relayable - {fp}]
        if held:
            self._pex_due = min(held)
        elif any(True for _ in self._sessions.live()):
            self._pex_due = now + PEX_SELF_INTERVAL
        else:
            self._pex_due = None

    def _pex_soon(self, now: float) -> None:
        """Something to pass on: send now."""
        self._pex_due = now
        self._poke()

    def _sign_own(self, now: float) -> bytes:
        assert self._own is not None
        return self._own.sign(now)

    # -- seeds ---------------------------------------------------------------------------

    def _add_seed(self, seed: Seed, address: str) -> None:
        where = (address, seed.port)
        if self.book.add_seed(where):
            self._seed_at[where] = seed
            self._poke()

    async def _resolve(self, seed: Seed, last: str) -> None:
        try:
            address = await self._loop.run_in_executor(None, resolve_seed, seed)
        except SeedLookupError as exc:
            log.warning("%s; trying its last address %s", exc, last)
            address = last
        still_kept = self._seeds is not None and any(e.seed == seed for e in self._seeds.seeds())
        if not self._closed and still_kept:
            self._add_seed(seed, address)

    def _seed_removed_elsewhere(self, seed: Seed) -> None:
        """Option 10 removed a seed (on the menu thread): forget it in the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to forget
            self._loop.call_soon_threadsafe(self._seed_removed, seed)

    def _seed_removed(self, seed: Seed) -> None:
        for where in [w for w, s in self._seed_at.items() if s == seed]:
            del self._seed_at[where]
            self.book.remove_seed(where)
