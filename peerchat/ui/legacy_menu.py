"""What the menu shows of legacy peers, and the interface it uses to reach them.

Legacy peers are shown apart from keyed peers everywhere, and every line
about them says that they are unencrypted (and, in lists, unverified).
Pure formatting, tested on its own; the menu's option 8 drives it.
"""

from __future__ import annotations

from typing import Final, Protocol

from peerchat.events import (
    LegacyMessageArrived,
    LegacyOutcome,
    LegacyPeer,
    LegacyPeerDiscovered,
    LegacyPeerLeft,
    LegacySendResult,
)
from peerchat.policy.sanitize import display_safe
from storage import DeliveryState, Direction, StoredMessage

OPTION: Final = "8"
MENU_LINE: Final = f"{OPTION}. Send to a legacy peer (unencrypted)"
SECTION: Final = "Legacy peers (unencrypted, unverified):"
NUMBER_PREFIX: Final = "L"


class LegacyBridge(Protocol):
    """The legacy side as the menu uses it (thread-safe; owned by whoever runs the network)."""

    @property
    def port(self) -> int:
        """The legacy TCP port listened on."""
        ...

    def peers(self) -> list[LegacyPeer]:
        """The legacy peer list, sorted for display."""
        ...

    def send(self, host: str, port: int, text: str) -> LegacySendResult:
        """Send one message to host:port in the format that peer speaks; waits for the result."""
        ...


def banner(port: int) -> str:
    return f"Legacy port {port} open for chat.py and plain-text programs (unencrypted, unverified)"


def with_legacy_option(menu: str) -> str:
    """The menu text with option 8 in its place: before any higher number, and "0. Quit"."""
    lines = menu.splitlines()
    option = int(OPTION)

    def after_it(line: str) -> bool:
        number = line.split(".", 1)[0]
        return number.isdigit() and (int(number) > option or int(number) == 0)

    at = next((i for i, line in enumerate(lines) if after_it(line)), len(lines))
    return "\n".join([*lines[:at], MENU_LINE, *lines[at:]])


def describe_legacy_event(
    event: LegacyMessageArrived | LegacyPeerDiscovered | LegacyPeerLeft,
) -> str:
    if isinstance(event, LegacyMessageArrived):
        return (
            f"Received from {event.host}:{event.port} ({display_safe(event.team)}) "
            f"[unencrypted]: {display_safe(event.text)}"
        )
    if isinstance(event, LegacyPeerDiscovered):
        return (
            f"Discovered legacy peer {display_safe(event.team)} at {event.host}:{event.port} "
            "[unencrypted, unverified]"
        )
    return (
        f"Legacy peer {display_safe(event.team)} at {event.host}:{event.port} left "
        f"({event.reason})."
    )


def legacy_section(peers: list[LegacyPeer], now: float) -> str:
    """Option 2's part about legacy peers, numbered L1, L2, ... for option 8."""
    if not peers:
        return f"{SECTION} none heard yet."
    rows = [("#", "Team", "Address", "Speaks", "Last seen")]
    for number, peer in enumerate(peers, 1):
        rows.append(
            (
                f"{NUMBER_PREFIX}{number}",
                display_safe(peer.team),
                f"{peer.host}:{peer.port}",
                peer.speaks,
                f"{max(0, int(now - peer.last_seen))}s ago",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join([SECTION, *lines])


def listed_number(text: str) -> int | None:
    """The list number in "L2" or "2" (as typed at option 8), if it is one."""
    digits = text[1:] if text[:1] in (NUMBER_PREFIX, NUMBER_PREFIX.lower()) else text
    if digits.isascii() and digits.isdigit() and len(digits) <= 4:
        return int(digits)
    return None


def describe_legacy_send(result: LegacySendResult) -> str:
    where = f"{result.host}:{result.port}"
    if result.outcome is LegacyOutcome.SENT:
        return f"Message sent to {where} (unencrypted, not acknowledged)"
    if result.outcome is LegacyOutcome.REFUSED:
        return f"Message not sent to {where}: {display_safe(result.detail)}."
    return f"Failed to connect to {where} - {result.detail} (nothing sent)"


def legacy_state(row: StoredMessage) -> str:
    """The bracketed state of a legacy history row."""
    if row.direction is Direction.IN:
        return "unencrypted"
    if row.state is DeliveryState.FAILED:
        return f"unencrypted, failed: {row.detail}" if row.detail else "unencrypted, failed"
    return "unencrypted, sent, not acknowledged"
