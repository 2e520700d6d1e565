"""Two real nodes in one process, over loopback TCP, no discovery."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crypto_utils import KeyManager
from peerchat.events import MessageArrived, Outcome, UiEvent
from peerchat.net.node import Node, NodeConfig
from storage import DeliveryState, Direction, HistoryStore
from tests.support import free_tcp_port


@dataclass
class Running:
    node: Node
    store: HistoryStore
    port: int
    events: list[UiEvent] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def on_event(self, event: UiEvent) -> None:
        with self.arrived:
            self.events.append(event)
            self.arrived.notify_all()

    def wait_for_text(self, text: str, timeout: float = 10.0) -> MessageArrived:
        def found() -> MessageArrived | None:
            for e in self.events:
                if isinstance(e, MessageArrived) and e.text == text:
                    return e
            return None

        with self.arrived:
            assert self.arrived.wait_for(lambda: found() is not None, timeout), text
            result = found()
        assert result is not None
        return result


def make_node(tmp: Path, name: str, port: int | None = None) -> Running:
    data = tmp / name
    data.mkdir(parents=True, exist_ok=True)
    keys = KeyManager(data)
    identity = keys.load_or_create_identity()
    store = HistoryStore.open(data / "chat_history.db", keys.load_or_create_sealer())
    port = port or free_tcp_port()
    config = NodeConfig(name=name, port=port, data_dir=data, bind="127.0.0.1", discovery=False)
    running = Running(node=None, store=store, port=port)  # type: ignore[arg-type]
    running.node = Node(config, identity, store, running.on_event)
    running.node.start()
    running.node.run()
    return running


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Running, Running]]:
    a, b = make_node(tmp_path, "Alice"), make_node(tmp_path, "Bob")
    yield a, b
    for r in (a, b):
        r.node.close()
        r.store.close()


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
