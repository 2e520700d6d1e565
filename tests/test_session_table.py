"""The session table: admission limits, one session per peer, and the tie-break."""

from __future__ import annotations

from dataclasses import dataclass

from peerchat.policy.session_table import AdmissionLimits, SessionTable, preferred
from peerchat.protocol.channel import Role

ME = "M" * 52
LOW = "A" * 52  # sorts before ME
HIGH = "Z" * 52  # sorts after ME


@dataclass(eq=False)
class FakeSession:
    role: Role
    remote_ip: str = "127.0.0.1"
    established: bool = False


def table(
    connections: int = 10, per_address: int = 10, pending: int = 10
) -> SessionTable[FakeSession]:
    return SessionTable(ME, AdmissionLimits(connections, per_address, pending))


def test_incoming_connections_beyond_the_total_are_refused_and_not_counted() -> None:
    t = table(connections=2)
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.1")) is None
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.2")) is None
    refused = t.admit(FakeSession(Role.RESPONDER, "10.0.0.3"))
    assert refused == "2 connections open"
    assert len(t.connections()) == 2


def test_one_address_may_not_take_more_than_its_share() -> None:
    t = table(per_address=1)
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.1")) is None
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.1")) is not None
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.2")) is None


def test_pending_handshakes_are_limited_and_established_ones_do_not_count() -> None:
    t = table(pending=1)
    first = FakeSession(Role.RESPONDER, "10.0.0.1")
    assert t.admit(first) is None
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.2")) == "1 handshakes pending"
    first.established = True
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.2")) is None


def test_our_own_connections_are_never_refused() -> None:
    t = table(connections=0, per_address=0, pending=0)
    assert t.admit(FakeSession(Role.INITIATOR)) is None


def test_a_closed_connection_frees_its_address_slot() -> None:
    t = table(per_address=1)
    s = FakeSession(Role.RESPONDER, "10.0.0.1")
    t.admit(s)
    assert t.remove(s, None) is False  # never authenticated: not anyone's session
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.1")) is None


def test_the_first_session_with_a_peer_stands_for_it_until_removed() -> None:
    t = table()
    s = FakeSession(Role.INITIATOR, established=True)
    t.admit(s)
    settled = t.settle(LOW, s)
    assert (settled.kept, settled.dropped) == (s, None)
    assert LOW in t and t.get(LOW) is s and len(t) == 1
    assert t.remove(s, LOW) is True
    assert LOW not in t


def test_both_ends_keep_the_session_initiated_by_the_smaller_fingerprint() -> None:
    # The peer's fingerprint is smaller than ours: keep the session it initiated.
    t = table()
    ours = FakeSession(Role.INITIATOR, established=True)
    theirs = FakeSession(Role.RESPONDER, established=True)
    t.settle(LOW, ours)
    settled = t.settle(LOW, theirs)
    assert (settled.kept, settled.dropped) == (theirs, ours)
    assert t.get(LOW) is theirs
    # Ours is smaller: keep ours, whichever came first.
    t2 = table()
    ours2 = FakeSession(Role.INITIATOR, established=True)
    theirs2 = FakeSession(Role.RESPONDER, established=True)
    t2.settle(HIGH, theirs2)
    settled2 = t2.settle(HIGH, ours2)
    assert (settled2.kept, settled2.dropped) == (ours2, theirs2)
    assert t2.get(HIGH) is ours2


def test_a_second_session_from_the_same_initiator_loses_to_the_older() -> None:
    t = table()
    old = FakeSession(Role.RESPONDER, established=True)
    new = FakeSession(Role.RESPONDER, established=True)
    t.settle(LOW, old)
    assert t.settle(LOW, new).dropped is new
    assert preferred(LOW, LOW) is True


def test_a_session_replaces_one_that_is_no_longer_established() -> None:
    t = table()
    old = FakeSession(Role.RESPONDER, established=False)  # closing
    new = FakeSession(Role.RESPONDER, established=True)
    t.settle(LOW, old)
    assert t.settle(LOW, new).dropped is None
    assert t.get(LOW) is new
    assert t.remove(old, LOW) is False  # the old one's close does not remove the new one
    assert t.get(LOW) is new


def test_room_for_a_new_connection_is_made_from_its_own_address_first() -> None:
    t: SessionTable[FakeSession] = SessionTable(ME, AdmissionLimits(100, 100, 100, 2))
    a1, a2, b1 = (FakeSession(Role.RESPONDER, ip) for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"))
    for s in (a1, a2, b1):
        assert t.make_room(s) == [] and t.admit(s) is None
    a3 = FakeSession(Role.RESPONDER, "10.0.0.1")
    assert t.make_room(a3) == [a1]  # the oldest pending from that address, not refused
    assert t.admit(a3) is None
    assert t.connections() == [a2, b1, a3]
    assert t.remove(a1, None) is False  # its close later changes nothing
    assert t.admit(FakeSession(Role.RESPONDER, "10.0.0.1")) is None  # a1's slot was given back


def test_when_all_pending_slots_are_taken_the_busiest_address_gives_way() -> None:
    t: SessionTable[FakeSession] = SessionTable(ME, AdmissionLimits(100, 100, 3, 3))
    idle = [FakeSession(Role.RESPONDER, "10.0.0.9") for _ in range(2)]
    other = FakeSession(Role.RESPONDER, "10.0.0.8")
    for s in [*idle, other]:
        assert t.make_room(s) == [] and t.admit(s) is None
    legit = FakeSession(Role.RESPONDER, "10.0.0.1")
    assert t.make_room(legit) == [idle[0]]
    assert t.admit(legit) is None
    # Established sessions and our own connections are never dropped for room.
    ours = FakeSession(Role.INITIATOR, "10.0.0.9")
    assert t.make_room(ours) == []
