"""What an authenticated session needs when it is quiet: a ping, a goodbye, or the end.

Pure, time passed in (the loop's monotonic clock). A session silent longer
than the peer timeout is dead; one without chat traffic for the idle timeout
is closed politely; one silent for `ping_every` is pinged, at most once per
`ping_every`, so a quiet but healthy peer stays listed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Upkeep(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"
    CLOSE_IDLE = "close idle"
    FAIL = "fail"


@dataclass(frozen=True)
class UpkeepLimits:
    peer_timeout: float
    idle_timeout: float
    ping_interval: float

    @property
    def ping_every(self) -> float:
        # Well within the peer timeout, so that the peer stays listed.
        return min(self.ping_interval, self.peer_timeout / 3)


def upkeep(
    limits: UpkeepLimits, now: float, last_received: float, last_chat: float, last_ping: float
) -> Upkeep:
    silent = now - last_received
    if silent > limits.peer_timeout:
        return Upkeep.FAIL
    if now - last_chat > limits.idle_timeout:
        return Upkeep.CLOSE_IDLE
    ping_every = limits.ping_every
    if silent > ping_every and now - last_ping > ping_every:
        return Upkeep.PING
    return Upkeep.NOTHING


def upkeep_due(
    limits: UpkeepLimits, last_received: float, last_chat: float, last_ping: float
) -> float:
    """The earliest time at which `upkeep` stops answering NOTHING (if nothing is heard)."""
    return min(
        last_received + limits.peer_timeout,
        last_chat + limits.idle_timeout,
        max(last_received, last_ping) + limits.ping_every,
    )
