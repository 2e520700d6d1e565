"""The peer or address an answer at a "which peer" prompt names.

Options 1 and 4 take the same answers: a number from option 2, a peer's
name, a dotted IPv4 or an IPv6 address, or a host name (the rules of what is
which are in policy/dialable.py). An address asks for its port next, as in
the original; a number or a name does not. Whether the answer works is said
only after the last question of its kind, so a wrong answer in a script
never shifts the lines that follow into the wrong prompts.

A name that is not known yet, while discovery is on, is waited for, briefly
and saying so: on a first run the script's peer has not heard the others yet.
The wait ends on the node's news (a discovered or connected peer), not on a
timer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from peerchat.errors import StorageError
from peerchat.events import ActivePeer
from peerchat.policy.dialable import Form, classify, is_host_name, parse_address, refusal
from peerchat.policy.sanitize import display_safe
from peerchat.policy.trust import pin_key

MAX_NUMBER_DIGITS = 6  # a longer "number" is no row of option 2 (and is never parsed)


@dataclass(frozen=True)
class PeerChoice:
    """What the user meant at a "which peer" prompt."""

    fingerprint: str | None = None  # a peer, chosen by number or name
    error: str | None = None  # why no peer could be chosen


@dataclass(frozen=True)
class Target:
    """A peer, or an address to dial on the port asked next, or why neither."""

    asks_port: bool  # the answer was an address: its port is the next question
    fingerprint: str | None = None
    host: str | None = None
    error: str | None = None


class PeerNews:
    """Wakes a menu that waits for a peer; the node reports peers from its own thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0

    def heard(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def mark(self) -> int:
        with self._changed:
            return self._count

    def wait_after(self, mark: int, timeout: float) -> bool:
        """Wait until news newer than `mark` arrives; False if `timeout` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count != mark, timeout)


def lookup_host(name: str) -> str | None:
    """The IPv4 address of a host name, or None."""
    try:
        return socket.gethostbyname(name)
    except (OSError, UnicodeError):
        return None


class TargetFinder:
    def __init__(
        self,
        *,
        pins: Callable[[], Mapping[str, str]],
        say: Callable[[str], None],
        news: PeerNews,
        broadcasts: Callable[[], Collection[str]],
        lookup: Callable[[str], str | None] = lookup_host,
    ) -> None:
        self._pins = pins
        self._say = say
        self._news = news
        self._broadcasts = broadcasts
        self._lookup = lookup

    def known_peer(
        self, text: str, listing: Sequence[ActivePeer], active: Callable[[], Sequence[ActivePeer]]
    ) -> PeerChoice:
        """A row of `listing` (else of the active peers) by number, or a known peer by name."""
        form = classify(text)
        if form is Form.NUMBER:
            rows = listing or active()
            index = int(text) if len(text) <= MAX_NUMBER_DIGITS else 0
            if 1 <= index <= len(rows):
                return PeerChoice(fingerprint=rows[index - 1].fingerprint)
            shown = text if len(text) <= MAX_NUMBER_DIGITS else text[:MAX_NUMBER_DIGITS] + "..."
            return PeerChoice(error=f"No peer number {shown}: see option 2.")
        if form is not Form.NAME:
            return PeerChoice()
        wanted = pin_key(text)
        matches = {p.fingerprint for p in active() if pin_key(p.name) == wanted}
        if len(matches) > 1:
            return PeerChoice(
                error=f"Several peers are called {display_safe(text)}: "
                "use their number from option 2."
            )
        if matches:
            return PeerChoice(fingerprint=matches.pop())
        with contextlib.suppress(StorageError):
            pinned = self._pins().get(wanted)
            if pinned is not None:
                return PeerChoice(fingerprint=pinned)
        return PeerChoice()

    def find(
        self,
        text: str,
        listing: Sequence[ActivePeer],
        active: Callable[[], Sequence[ActivePeer]],
        *,
        wait: float,
    ) -> Target:
        """What `text` names; a name not known yet is waited for up to `wait` seconds."""
        form = classify(text)
        shown = display_safe(text)
        if form is Form.NOT_AN_ADDRESS:
            return Target(
                asks_port=True,
                error=f"Not an address: {shown}. Type a dotted IPv4 address such as "
                "192.168.1.7, a peer's name, or its number from option 2.",
            )
        if form is Form.ADDRESS:
            address = parse_address(text)
            assert address is not None
            return self._dialable(address, shown)
        choice = self.known_peer(text, listing, active)
        if choice.fingerprint is not None or choice.error is not None or form is Form.NUMBER:
            return Target(asks_port=False, fingerprint=choice.fingerprint, error=choice.error)
        # A dotted host name is looked up at once; a bare word is more likely a
        # peer's name, so discovery is given its chance first.
        dotted = "." in text.rstrip(".") or text.casefold() == "localhost"
        if dotted and (found := self._host(text, shown)) is not None:
            return found
        if wait > 0:
            choice = self._wait_for_name(text, active, wait)
            if choice.fingerprint is not None or choice.error is not None:
                return Target(asks_port=False, fingerprint=choice.fingerprint, error=choice.error)
        if not dotted and (found := self._host(text, shown)) is not None:
            return found
        return Target(asks_port=False, error=f"Unknown peer or address: {shown} (see option 2).")

    def address(self, text: str) -> Target:
        """An address or host name only (no peer names): for peers that have no key."""
        shown = display_safe(text)
        parsed = parse_address(text)
        if parsed is not None:
            return self._dialable(parsed, shown)
        if classify(text) is not Form.NOT_AN_ADDRESS and (found := self._host(text, shown)):
            return found
        return Target(asks_port=True, error=f"Unknown address: {shown}")

    def _dialable(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, shown: str
    ) -> Target:
        why = refusal(address, self._broadcasts())
        if why is not None:
            return Target(asks_port=True, error=f"Not dialling {shown}: {why}.")
        return Target(asks_port=True, host=str(address))

    def _host(self, name: str, shown: str) -> Target | None:
        if not is_host_name(name):
            return None
        resolved = self._lookup(name)
        if resolved is None:
            return None
        address = parse_address(resolved)
        if address is None:
            return None
        return self._dialable(address, f"{shown} ({resolved})")

    def _wait_for_name(
        self, text: str, active: Callable[[], Sequence[ActivePeer]], wait: float
    ) -> PeerChoice:
        deadline = time.monotonic() + wait
        self._say(
            f"{display_safe(text)} is not known yet: waiting up to {wait:g} s "
            "for discovery to find it..."
        )
        while True:
            mark = self._news.mark()
            choice = self.known_peer(text, (), active)
            remaining = deadline - time.monotonic()
            if choice.fingerprint is not None or choice.error is not None or remaining <= 0:
                return choice
            self._news.wait_after(mark, remaining)
