"""What a beacon from the discovery service means for this peer.

A beacon whose key the trust book refuses is reported, not listed. Otherwise
presence decides whether it is news: a run not seen before is announced (and
answered at once with our own beacon, so the newcomer learns of us quickly);
a peer with messages waiting and no session is tried at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from peerchat.delivery import Delivery
from peerchat.events import PeerDiscovered, UiEvent
from peerchat.net.liveness_checker import LivenessChecker
from peerchat.net.reconnector import Reconnector
from peerchat.net.trust_book import TrustBook
from peerchat.policy.presence import BeaconNews, Presence
from peerchat.protocol.beacon import BeaconAccepted


class BeaconIntake:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        trust_book: TrustBook,
        presence: Presence,
        liveness: LivenessChecker,
        delivery: Delivery,
        has_session: Callable[[str], bool],
        reconnector: Reconnector,
        emit: Callable[[UiEvent], None],
        announce: Callable[[], None],
        on_claim: Callable[[str, str, int, str], None] | None = None,
    ) -> None:
        self._loop = loop
        self._trust = trust_book
        self._presence = presence
        self._liveness = liveness
        self._delivery = delivery
        self._has_session = has_session
        self._reconnector = reconnector
        self._emit = emit
        self._announce = announce
        # Told (fingerprint, host, port, name) of each beacon whose key may be listed.
        self._on_claim = on_claim

    def __call__(self, accepted: BeaconAccepted) -> None:
        beacon = accepted.beacon
        fp = beacon.fingerprint
        host, port = accepted.source_ip, beacon.tcp_port
        if not self._trust.admit_beacon(beacon.name, fp, host, port, beacon.identity_der):
            return
        now = self._loop.time()
        news = self._presence.beacon(
            fp, beacon.name, host, port, beacon.instance, now=now, wall=time.time()
        )
        if news is BeaconNews.IGNORED:
            return
        if self._on_claim is not None:
            self._on_claim(fp, host, port, beacon.name)
        self._liveness.heard_from_afar(now)
        if news is BeaconNews.ANNOUNCE:
            self._emit(PeerDiscovered(beacon.name, host, port))
            self._announce()
        if self._reconnector.wanted(fp) and not self._has_session(fp):
            self._reconnector.want(fp, at_once=True)
