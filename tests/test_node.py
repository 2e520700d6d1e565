"""Two real nodes in one process, over loopback TCP, no discovery."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from peerchat.errors import NotAnswering
from peerchat.events import MessageArrived, Outcome, QueuedDelivered
from peerchat.limits import SEND_WAIT
from peerchat.net.node import Node, NodeConfig
from storage import DeliveryState, Direction
from tests.support import RunningNode, free_tcp_port, open_profile, start_node

T = TypeVar("T")


class Running(RunningNode):
    def wait_for_text(self, text: str, timeout: float = 10.0) -> MessageArrived:
        def found() -> MessageArrived | None:
            for e in self.events:
                if isinstance(e, MessageArrived) and e.text == text:
                    return e
            return None

        with self.changed:
            assert self.changed.wait_for(lambda: found() is not None, timeout), text
            result = found()
        assert result is not None
        return result


def make_node(
    tmp: Path, name: str, port: int | None = None, *, send_wait: float = SEND_WAIT
) -> Running:
    data = tmp / name
    identity, store = open_profile(data)
    port = port or free_tcp_port()
    config = NodeConfig(
        name=name,
        port=port,
        data_dir=data,
        bind="127.0.0.1",
        discovery=False,
        send_wait=send_wait,
    )
    return start_node(config, identity, store, Running)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Running, Running]]:
    a, b = make_node(tmp_path, "Alice"), make_node(tmp_path, "Bob")
    yield a, b
    for r in (a, b):
        r.close()


def test_simultaneous_connects_leave_one_session_both_ways(pair: tuple[Running, Running]) -> None:
    a, b = pair
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(a.node.connect("127.0.0.1", b.port))),
        threading.Thread(target=lambda: results.append(b.node.connect("127.0.0.1", a.port))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads), "a connect call hung"
    assert len(results) == 2, results
    assert all(getattr(r, "ok", False) for r in results), results
    sent = a.node.send_to_address("127.0.0.1", b.port, "after the race")
    assert sent.outcome is Outcome.DELIVERED
    b.wait_for_text("after the race")
    reply = b.node.send_to_address("127.0.0.1", a.port, "reply")
    assert reply.outcome is Outcome.DELIVERED
    a.wait_for_text("reply")
    assert a.node.session_count() == 1
    assert b.node.session_count() == 1


def test_sending_to_own_address_is_refused(pair: tuple[Running, Running]) -> None:
    a, _ = pair
    result = a.node.send_to_address("127.0.0.1", a.port, "me?")
    assert result.outcome is Outcome.FAILED
    assert "own address" in result.detail


def test_pipelined_burst_arrives_once_in_order(pair: tuple[Running, Running]) -> None:
    a, b = pair
    assert a.node.connect("127.0.0.1", b.port).ok
    bob_fp = next(iter(a.store.pins().values()))
    texts = [f"burst {i:04d}" for i in range(600)]
    ids = a.node.submit(bob_fp, texts)
    assert a.node.wait_delivered(ids, timeout=30)
    b.wait_for_text("burst 0599")
    received = [r.text for r in b.store.history(limit=1000) if r.direction is Direction.IN]
    assert received == texts
    sent = a.store.history(limit=1000)
    assert {r.state for r in sent} == {DeliveryState.DELIVERED}
    assert len(sent) == 600


def test_a_send_not_acknowledged_in_time_says_so_and_is_delivered_later(tmp_path: Path) -> None:
    """Option 1 waits `send_wait` for the acknowledgement, then answers PENDING; the message
    stays queued, and its late acknowledgement marks it delivered and is news."""
    alice = make_node(tmp_path, "Alice", send_wait=0.5)
    bob = make_node(tmp_path, "Bob")
    try:
        assert alice.node.connect("127.0.0.1", bob.port).ok
        bob_fp = next(iter(alice.store.pins().values()))
        busy, started = threading.Event(), threading.Event()

        def hold_the_loop() -> None:  # Bob reads nothing until released
            started.set()
            busy.wait(10)

        bob.node.loop.call_soon_threadsafe(hold_the_loop)
        assert started.wait(5)
        result = alice.node.send_to_peer(bob_fp, "patience")
        assert result.outcome is Outcome.PENDING, result
        assert "no acknowledgement yet" in result.detail
        assert [r.state for r in alice.store.pending_messages()] == [DeliveryState.PENDING]
        busy.set()
        bob.wait_for_text("patience")
        with alice.changed:
            assert alice.changed.wait_for(
                lambda: any(isinstance(e, QueuedDelivered) for e in alice.events), 10
            ), alice.events
        assert alice.store.pending_messages() == []
        assert [r.state for r in alice.store.history(limit=10)] == [DeliveryState.DELIVERED]
        # The next send is answered by its acknowledgement again, not by the old deadline.
        assert alice.node.send_to_peer(bob_fp, "again").outcome is Outcome.DELIVERED
    finally:
        busy.set()
        for r in (alice, bob):
            r.close()


def test_an_idle_node_sleeps_until_something_is_due(tmp_path: Path) -> None:
    """No polling: the loop's one timer waits for the next due time, and fires only then."""
    alone = make_node(tmp_path, "Alone")
    try:
        assert (
            in_loop(alone.node, lambda: alone.node.alarm.when) is None
        )  # nothing will ever be due
    finally:
        alone.node.close()
        alone.store.close()


def test_a_quiet_session_wakes_the_node_only_to_ping(pair: tuple[Running, Running]) -> None:
    a, b = pair
    loop = a.node.loop
    before = in_loop(a.node, loop.time)
    assert a.node.connect("127.0.0.1", b.port).ok
    # The new peer is written to peers.json first, at once; wait until that is done.
    written = a.node.config.data_dir / "peers.json"
    deadline = time.monotonic() + 10
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert written.exists()
    limits = a.node.config
    ping_every = min(limits.ping_interval, limits.peer_timeout / 3)

    def armed() -> tuple[float | None, float]:
        return a.node.alarm.when, loop.time()

    # Right after the handshake the session's start-up work (peer exchange) may be
    # due; once it has run, nothing may be due before the first ping. Any periodic
    # tick shorter than ping_every - 2 s keeps the alarm early past this deadline.
    when, now = in_loop(a.node, armed)
    deadline = time.monotonic() + 2.0
    while (when is None or when < before + ping_every) and time.monotonic() < deadline:
        time.sleep(0.01)
        when, now = in_loop(a.node, armed)
    assert when is not None and when > now
    # The next thing due is the session's first ping, ping_every after the last traffic
    # (the handshake, or Bob's first frames, which may come a moment after it): nothing
    # earlier (no periodic tick) and nothing later.
    assert before + ping_every <= when <= now + ping_every + 0.01


def test_a_stuck_loop_makes_a_call_fail_in_bounded_time(tmp_path: Path) -> None:
    data = tmp_path / "Stuck"
    identity, store = open_profile(data)
    config = NodeConfig(
        name="Stuck",
        port=free_tcp_port(),
        data_dir=data,
        bind="127.0.0.1",
        discovery=False,
        call_slack=0.2,
    )
    node = Node(config, identity, store, lambda _: None)
    node.start()
    node.run()
    released = threading.Event()
    try:
        node.loop.call_soon_threadsafe(released.wait, 10)  # the loop hangs in a callback
        started = time.monotonic()
        with pytest.raises(NotAnswering):
            node.active_peers()
        assert time.monotonic() - started < 5
    finally:
        released.set()
        node.close()
        store.close()


def in_loop(node: Node, fn: Callable[[], T]) -> T:
    """Run `fn` in the node's network thread (where its state lives)."""

    async def call() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), node.loop).result(5)
