"""The listening ports open in turn; one that fails closes itself and every one before it."""

from __future__ import annotations

import asyncio

import pytest

from peerchat.errors import BindError
from peerchat.net.ports import OpenPorts, Port


class FakePort:
    def __init__(self, name: str, log: list[str], *, fails: bool = False) -> None:
        self.name = name
        self.log = log
        self.fails = fails

    async def open(self) -> None:
        self.log.append(f"open {self.name}")
        if self.fails:
            raise BindError(f"{self.name} is already in use")

    def close(self) -> None:
        self.log.append(f"close {self.name}")

    def port(self) -> Port:
        return Port(self.open, self.close)


def open_all(ports: OpenPorts, fakes: list[FakePort]) -> None:
    async def run() -> None:
        for fake in fakes:
            await ports.open(fake.port())

    asyncio.run(run())


def test_ports_open_in_turn_and_close_newest_first() -> None:
    log: list[str] = []
    ports = OpenPorts()
    open_all(ports, [FakePort(name, log) for name in ("tcp", "legacy", "discovery")])
    assert log == ["open tcp", "open legacy", "open discovery"]
    ports.close()
    assert log[3:] == ["close discovery", "close legacy", "close tcp"]
    ports.close()  # closed once only
    assert len(log) == 6


def test_a_port_that_fails_closes_itself_and_those_before_and_nothing_after_opens() -> None:
    log: list[str] = []
    ports = OpenPorts()
    fakes = [FakePort("tcp", log), FakePort("legacy", log, fails=True), FakePort("discovery", log)]
    with pytest.raises(BindError, match="legacy is already in use"):
        open_all(ports, fakes)
    assert log == ["open tcp", "open legacy", "close legacy", "close tcp"]
    ports.close()  # nothing left open
    assert len(log) == 4
