"""Menu options 11 (send a file) and 12 (answer file offers), and how transfer news reads.

The options talk to the node through `FileTransferControl`, a small protocol:
the menu offers them when the node implements it. Everything a peer chose (its
name, its file name) passes through `display_safe` before it is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from peerchat.events import (
    ActivePeer,
    ConnectResult,
    FileEvent,
    FileOffered,
    FileOutcome,
    FileProgress,
    FileResult,
    FileTransferEnded,
    IncomingOffer,
)
from peerchat.net.file_store import FileStoreError, SourceFile, inspect_source
from peerchat.policy.progress import format_size
from peerchat.policy.sanitize import display_safe
from peerchat.policy.transfer import TransferOutcome

SEND_FILE = "11"
ANSWER_OFFERS = "12"
MENU_LINES = f"{SEND_FILE}. Send file\n{ANSWER_OFFERS}. Answer file offers"
LARGE_FILE = 100_000_000  # bytes from which hashing before the offer is announced


@runtime_checkable
class FileTransferControl(Protocol):
    """What the file options need from the node (all called from the menu thread)."""

    def active_peers(self) -> list[ActivePeer]: ...

    def connect(self, host: str, port: int) -> ConnectResult: ...

    def send_file(self, fingerprint: str, source: SourceFile) -> FileResult:
        """Offer a checked and hashed file; it waits if the peer is away."""
        ...

    def file_offers(self) -> list[IncomingOffer]: ...

    def answer_offer(self, key: str, accept: bool) -> FileResult: ...


@dataclass(frozen=True)
class Recipient:
    """Who option 11 sends to: a known peer, or why there is none."""

    fingerprint: str | None = None
    error: str | None = None


class LineReader(Protocol):
    def read(self, prompt: str) -> str: ...


def send_file(
    reader: LineReader,
    say: Callable[[str], None],
    files: FileTransferControl,
    recipient: Callable[[LineReader], Recipient],
) -> None:
    """Option 11: the recipient as in option 1, then a path."""
    chosen = recipient(reader)
    if chosen.fingerprint is None:
        say(chosen.error or "No recipient given.")
        return
    typed = reader.read("Enter the file's path: ").strip()
    if not typed:
        say("No file given.")
        return
    path = Path(typed).expanduser()
    try:
        if path.is_file() and path.stat().st_size >= LARGE_FILE:
            size = format_size(path.stat().st_size)
            say(f"Reading {display_safe(path.name)} ({size}) to compute its SHA-256 ...")
        source = inspect_source(path)
    except FileStoreError as exc:
        say(f"Cannot send {display_safe(typed)}: {display_safe(str(exc))}.")
        return
    except OSError as exc:
        say(f"Cannot send {display_safe(typed)}: {(exc.strerror or str(exc)).lower()}.")
        return
    say(describe_file_result(files.send_file(chosen.fingerprint, source)))


def answer_offers(
    reader: LineReader, say: Callable[[str], None], files: FileTransferControl
) -> None:
    """Option 12: list the offers waiting, then accept or decline one."""
    offers = files.file_offers()
    if not offers:
        say("No file offers waiting.")
        return
    lines = ["Incoming file offers:"]
    for number, offer in enumerate(offers, 1):
        lines.append(f"  {number}. {describe_offer(offer.peer_name, offer.file_name, offer.size)}")
    say("\n".join(lines))
    choice = reader.read("Offer to answer (number, empty to go back): ").strip()
    if not choice:
        return
    if not choice.isdigit() or not 1 <= int(choice) <= len(offers):
        say(f"No offer number {display_safe(choice)}.")
        return
    offer = offers[int(choice) - 1]
    what = f"{display_safe(offer.file_name)} from {display_safe(offer.peer_name)}"
    answer = reader.read(f"Accept or decline {what}? (a/d): ").strip().lower()
    if answer in ("a", "accept", "y", "yes"):
        say(describe_answer(files.answer_offer(offer.key, accept=True)))
    elif answer in ("d", "decline", "n", "no"):
        say(describe_answer(files.answer_offer(offer.key, accept=False)))
    else:
        say("Not answered: type a to accept or d to decline.")


# -- formatting (pure) ------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def describe_offer(peer_name: str, file_name: str, size: int) -> str:
    return f"{display_safe(peer_name)} offers {display_safe(file_name)} ({format_size(size)})"


def describe_file_event(event: FileEvent) -> str:
    if isinstance(event, FileOffered):
        return (
            f"{describe_offer(event.peer_name, event.file_name, event.size)}: "
            f"option {ANSWER_OFFERS} to accept or decline."
        )
    name, peer = display_safe(event.file_name), display_safe(event.peer_name)
    what = f"{name} to {peer}" if event.outgoing else f"{name} from {peer}"
    if isinstance(event, FileProgress):
        verb = "Sending" if event.outgoing else "Receiving"
        percent = 100.0 * event.done / event.size if event.size else 100.0
        done, size = format_size(event.done), format_size(event.size)
        line = f"{verb} {what}: {percent:.0f}% ({done} of {size})"
        if event.rate:
            line += f", {format_size(round(event.rate))}/s"
        if event.seconds_left is not None:
            line += f", {format_duration(event.seconds_left)} left"
        return line
    return _describe_end(event, what)


def _describe_end(event: FileTransferEnded, what: str) -> str:
    name, peer = display_safe(event.file_name), display_safe(event.peer_name)
    reason = display_safe(event.reason)
    if event.outcome is TransferOutcome.COMPLETE:
        if event.outgoing:
            return f"Sent {what} ({format_size(event.size)})."
        saved = display_safe(event.saved_as or "")
        return f"Received {what} ({format_size(event.size)}): saved as {saved}"
    if event.outcome is TransferOutcome.DECLINED:
        if event.outgoing:
            because = f": {reason}" if reason and reason != "declined" else ""
            return f"{peer} declined {name}{because}."
        return f"Declined {what} ({format_size(event.size)}): {reason}."
    if event.outcome is TransferOutcome.STALLED:
        if event.outgoing:
            return f"Sending {what} stalled ({reason}): it resumes on the next connection."
        return (
            f"Receiving {what} stalled ({reason}): {format_size(event.kept)} kept; "
            f"it resumes when {peer} is back."
        )
    verb = "Sending" if event.outgoing else "Receiving"
    removed = "" if event.outgoing else "; nothing was kept"
    return f"{verb} {what} failed: {reason}{removed}."


def describe_file_result(result: FileResult) -> str:
    """What option 11 says about an offer it made."""
    name, peer = display_safe(result.file_name), display_safe(result.peer_name)
    if result.outcome is FileOutcome.OFFERED:
        return f"Offered {name} to {peer}: it is sent once {peer} accepts."
    if result.outcome is FileOutcome.QUEUED:
        return (
            f"{peer} is not connected: the offer of {name} waits and goes out when {peer} is back."
        )
    return f"{name} not offered: {display_safe(result.detail)}."


def describe_answer(result: FileResult) -> str:
    """What option 12 says about an answer to an offer."""
    name, peer = display_safe(result.file_name), display_safe(result.peer_name)
    detail = display_safe(result.detail)
    if result.outcome is FileOutcome.ACCEPTED:
        return f"Accepted {name} from {peer}: it is saved in {detail} once it has arrived whole."
    if result.outcome is FileOutcome.DECLINED:
        return f"Declined {name} from {peer}."
    if result.outcome is FileOutcome.NOT_SENT:
        return f"Cannot accept {name} from {peer}: {detail}."
    return "That offer is no longer waiting."
