"""What options 1 and 4 make of an answer: a listed number, a name, an address."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from peerchat.events import ActivePeer
from peerchat.ui.targets import PeerNews, Target, TargetFinder

FP_BOB = "B" * 52
FP_CAROL = "C" * 52
FP_OLD_FRIEND = "F" * 52
LONG_WAIT = 30.0  # never reached: news ends these waits


def peer(fp: str, name: str, port: int) -> ActivePeer:
    return ActivePeer(fp, name, "127.0.0.1", port, False, 0.0)


class World:
    """The finder's surroundings: the active list, pins, the resolver, the screen."""

    def __init__(self, hosts: dict[str, str] | None = None) -> None:
        self.active: list[ActivePeer] = [peer(FP_BOB, "Bob", 5001)]
        self.pins = {"old friend": FP_OLD_FRIEND}
        self.hosts = hosts or {}
        self.looked_up: list[str] = []
        self.said: list[str] = []
        self.news = PeerNews()
        self.finder = TargetFinder(
            pins=lambda: self.pins,
            say=self.said.append,
            news=self.news,
            broadcasts=lambda: {"255.255.255.255", "192.168.1.255"},
            lookup=self.lookup,
        )

    def lookup(self, name: str) -> str | None:
        self.looked_up.append(name)
        return self.hosts.get(name)

    def listed(self) -> Sequence[ActivePeer]:
        return list(self.active)

    def find(self, text: str, wait: float = 0.0, listing: Sequence[ActivePeer] = ()) -> Target:
        return self.finder.find(text, listing, self.listed, wait=wait)


def test_a_number_is_a_row_of_option_2_and_never_an_address() -> None:
    world = World()
    world.active.append(peer(FP_CAROL, "Carol", 5002))
    assert world.find("2").fingerprint == FP_CAROL
    listing = [peer(FP_CAROL, "Carol", 5002)]  # what option 2 showed last
    assert world.find("1", listing=listing).fingerprint == FP_CAROL
    for text in ("3", "0", "9" * 5000):
        target = world.find(text, wait=LONG_WAIT)
        assert target.error is not None and target.error.startswith("No peer number")
        assert not target.asks_port and target.host is None
    assert world.looked_up == [] and world.said == []


def test_an_address_asks_its_port_and_what_reaches_no_host_is_refused() -> None:
    world = World()
    ok = world.find("10.0.0.7")
    assert (ok.asks_port, ok.host, ok.error) == (True, "10.0.0.7", None)
    assert world.find("[::1]").host == "::1"
    for text in ("0.0.0.2", "224.0.0.1", "255.255.255.255", "192.168.1.255", "::"):
        refused = world.find(text)
        assert refused.asks_port and refused.host is None
        assert refused.error is not None and refused.error.startswith(f"Not dialling {text}: ")
    shorthand = world.find("127.1")
    assert shorthand.asks_port and shorthand.host is None
    assert shorthand.error is not None and shorthand.error.startswith("Not an address: 127.1.")
    assert world.looked_up == []


def test_a_name_is_a_listed_or_pinned_peer_as_people_compare_names() -> None:
    world = World()
    assert world.find("bob").fingerprint == FP_BOB
    assert world.find("BOB", wait=LONG_WAIT).fingerprint == FP_BOB
    assert world.find("Old  Friend").fingerprint == FP_OLD_FRIEND
    world.active.append(peer(FP_CAROL, "Bob", 5002))
    twice = world.find("Bob")
    assert twice.fingerprint is None
    assert twice.error is not None and "use their number from option 2" in twice.error
    assert world.looked_up == [] and world.said == []


def test_a_new_name_is_waited_for_until_the_node_reports_it() -> None:
    world = World()

    def discovered() -> None:
        world.active.append(peer(FP_CAROL, "Carol", 5002))
        world.news.heard()

    timer = threading.Timer(0.2, discovered)
    timer.start()
    started = time.monotonic()
    try:
        found = world.find("Carol", wait=LONG_WAIT)
    finally:
        timer.cancel()
    assert time.monotonic() - started < LONG_WAIT  # ended by the news, not the bound
    assert found.fingerprint == FP_CAROL and not found.asks_port
    assert world.said == ["Carol is not known yet: waiting up to 30 s for discovery to find it..."]
    assert world.looked_up == []


def test_other_news_does_not_end_the_wait_and_the_wait_is_bounded() -> None:
    world = World()
    stop = threading.Event()

    def chatter() -> None:  # other peers come and go; nobody called Dave
        while not stop.wait(0.02):
            world.news.heard()

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        target = world.find("Dave", wait=0.3)
    finally:
        stop.set()
        thread.join()
    assert target.error == "Unknown peer or address: Dave (see option 2)."
    assert not target.asks_port  # a name: the next question is the message
    assert world.looked_up == ["Dave"]  # a bare word is looked up only after the wait


def test_host_names_resolve_but_only_to_dialable_addresses() -> None:
    world = World(hosts={"bob-laptop.lan": "192.168.1.7", "blocked.example": "0.0.0.0"})
    laptop = world.find("bob-laptop.lan", wait=LONG_WAIT)  # dotted: looked up, no wait
    assert (laptop.asks_port, laptop.host) == (True, "192.168.1.7")
    blocked = world.find("blocked.example")
    assert blocked.asks_port and blocked.host is None
    assert blocked.error is not None
    assert blocked.error.startswith("Not dialling blocked.example (0.0.0.0): ")
    assert world.said == []
    # Not a host name at all: never handed to the resolver.
    assert world.find("No_such peer").error == (
        "Unknown peer or address: No_such peer (see option 2)."
    )
    assert world.looked_up == ["bob-laptop.lan", "blocked.example"]
