"""How much one peer may have stored here per hour: messages and bytes, more for verified peers.

Pure, time passed in. Each key has two budgets, refilled evenly over an hour
up to the hourly limit: a message count and a byte count (UTF-8 text). A
verified peer's limits are VERIFIED_FACTOR times larger. What does not fit is
not stored and so not acknowledged: the sender keeps it and is told why.
The table is LRU-capped; a key pushed out starts again with a full budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from peerchat.limits import QUOTA_BYTES_PER_HOUR, QUOTA_MESSAGES_PER_HOUR

HOUR: Final = 3600.0
VERIFIED_FACTOR: Final = 10
MAX_TRACKED: Final = 4096


@dataclass(frozen=True)
class QuotaLimits:
    messages_per_hour: int = QUOTA_MESSAGES_PER_HOUR
    bytes_per_hour: int = QUOTA_BYTES_PER_HOUR

    def describe(self) -> str:
        mib = self.bytes_per_hour / (1024 * 1024)
        return f"at most {self.messages_per_hour:,} messages and {mib:g} MiB an hour"


class _Budget:
    __slots__ = ("bytes", "messages", "stamp")

    def __init__(self, messages: float, size: float, now: float) -> None:
        self.messages = messages
        self.bytes = size
        self.stamp = now


class ReceiveQuota:
    def __init__(self, limits: QuotaLimits, max_tracked: int = MAX_TRACKED) -> None:
        self._limits = limits
        self._max_tracked = max_tracked
        self._budgets: OrderedDict[str, _Budget] = OrderedDict()

    def limits_for(self, verified: bool) -> QuotaLimits:
        if not verified:
            return self._limits
        return QuotaLimits(
            self._limits.messages_per_hour * VERIFIED_FACTOR,
            self._limits.bytes_per_hour * VERIFIED_FACTOR,
        )

    def admit(self, fingerprint: str, sizes: Sequence[int], *, verified: bool, now: float) -> int:
        """How many of these messages (sizes in bytes, in order) may be stored now; charged."""
        cap = self.limits_for(verified)
        budget = self._budgets.pop(fingerprint, None)
        if budget is None:
            budget = _Budget(cap.messages_per_hour, cap.bytes_per_hour, now)
        else:
            elapsed = max(0.0, now - budget.stamp)
            budget.messages = min(
                cap.messages_per_hour, budget.messages + elapsed * cap.messages_per_hour / HOUR
            )
            budget.bytes = min(
                cap.bytes_per_hour, budget.bytes + elapsed * cap.bytes_per_hour / HOUR
            )
            budget.stamp = now
        self._budgets[fingerprint] = budget
        while len(self._budgets) > self._max_tracked:
            self._budgets.popitem(last=False)
        taken = 0
        for size in sizes:
            if budget.messages < 1 or budget.bytes < size:
                break
            budget.messages -= 1
            budget.bytes -= size
            taken += 1
        return taken
