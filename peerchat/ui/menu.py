"""The numbered menu, as the original drew it, and how the node's news is shown.

On a terminal the input line is prompt_toolkit's, under `patch_stdout`, so a
message that arrives while the user types is printed above the line without
destroying it. When standard input is not a terminal the menu reads plain
lines, so a peer can be scripted; end of input quits as 0 does.

Everything a peer chose (its name, its messages) passes through
`display_safe` before it reaches the screen.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from crypto_utils import Identity, format_fingerprint, short_id
from peerchat import limits
from peerchat.errors import StorageError
from peerchat.events import (
    ActivePeer,
    KeyChanged,
    MessageArrived,
    Outcome,
    PeerConnected,
    PeerDiscovered,
    PeerOffline,
    Problem,
    QueuedDelivered,
    QueuedExpired,
    SendResult,
    UiEvent,
)
from peerchat.net.node import Node
from peerchat.policy.sanitize import display_safe
from peerchat.policy.trust import pin_key
from storage import Direction, HistoryStore, StoredMessage

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

MENU = """***** Menu *****
1. Send message
2. Query active peers
3. View chat history
4. Connect to active peer
5. Show my fingerprint
6. Verify or re-trust a peer
7. Search history
0. Quit"""

HISTORY_LIMIT = 50


@dataclass(frozen=True)
class PeerChoice:
    """What the user meant at a "which peer" prompt."""

    fingerprint: str | None = None  # a peer, chosen by number or name
    error: str | None = None  # why no peer could be chosen


class LineReader(Protocol):
    def read(self, prompt: str) -> str:
        """One line of input; EOFError at end of input, KeyboardInterrupt on Ctrl+C."""
        ...


class PipeReader:
    """Plain lines from a non-terminal standard input (scripts, tests)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def read(self, prompt: str) -> str:
        self._write(prompt)
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")


class TerminalReader:
    """prompt_toolkit's input line; history of what was typed stays in memory only."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession

        self._session: PromptSession[str] = PromptSession()

    def read(self, prompt: str) -> str:
        return self._session.prompt(prompt)


class Menu:
    def __init__(self, *, store: HistoryStore, identity: Identity, data_dir: Path) -> None:
        self.store = store
        self.identity = identity
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._terminal: TextIO = sys.stdout  # the real stdout, even under patch_stdout
        self._listing: list[ActivePeer] = []  # rows of the last option 2, for "send to number"

    # -- output --------------------------------------------------------------

    def say(self, text: str) -> None:
        """The menu's own output, printed while no prompt is on screen.

        Written straight to the terminal: through patch_stdout it would be
        flushed by another thread, which could decide "no prompt" just before
        the next prompt is drawn and then write over it.
        """
        with self._lock:
            self._terminal.write(text + "\n")
            self._terminal.flush()

    def _write_prompt(self, text: str) -> None:
        with self._lock:
            self._terminal.write(text)
            self._terminal.flush()

    def show_event(self, event: UiEvent) -> None:
        """Called from the network thread: one line per piece of news.

        On a terminal, sys.stdout is then patch_stdout's proxy, which prints the
        line above the prompt and draws the prompt again with what was typed.
        """
        text = describe_event(event)
        with self._lock:
            print(text, flush=True)

    # -- the loop ------------------------------------------------------------

    def run(self, node: Node, *, port: int) -> None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self._terminal = sys.stdout
        with self._output_context(interactive):
            reader: LineReader = TerminalReader() if interactive else PipeReader(self._write_prompt)
            self.say(f"Server listening on port {port}...")
            self.say(
                f"Your ID: {self.identity.short_id}  "
                f"({format_fingerprint(self.identity.fingerprint)})"
            )
            self.say(f"Data folder: {self.data_dir}")
            node.run()
            try:
                while True:
                    self.say(MENU)
                    choice = reader.read("Enter choice: ").strip()
                    if choice == "0":
                        break
                    self._dispatch(choice, reader, node)
            except (EOFError, KeyboardInterrupt):
                pass
            self.say("Goodbye.")

    @staticmethod
    @contextlib.contextmanager
    def _output_context(interactive: bool) -> Iterator[None]:
        if not interactive:
            yield
            return
        from prompt_toolkit.patch_stdout import patch_stdout

        with patch_stdout(raw=True):
            yield

    def _dispatch(self, choice: str, reader: LineReader, node: Node) -> None:
        actions: dict[str, Callable[[LineReader, Node], None]] = {
            "1": self.send_message,
            "2": self.query_peers,
            "3": self.view_history,
            "4": self.connect,
            "5": self.show_fingerprint,
            "6": self.verify_peer,
            "7": self.search_history,
        }
        action = actions.get(choice)
        if action is None:
            self.say("Invalid choice. Please enter a number from the menu.")
            return
        action(reader, node)

    # -- 1. send -------------------------------------------------------------

    def send_message(self, reader: LineReader, node: Node) -> None:
        target = reader.read("Enter recipient's IP: ").strip()
        if not target:
            self.say("No recipient given.")
            return
        host, port = "", 0
        chosen = self._pick_peer(target, node)
        if chosen.error:
            self.say(chosen.error)
            return
        peer_fp = chosen.fingerprint
        if peer_fp is None:
            resolved = _resolve_host(target)
            if resolved is None:
                self.say(f"Unknown peer or address: {display_safe(target)}")
                return
            host = resolved
            port_text = reader.read("Enter recipient's port number: ").strip()
            parsed = _parse_port(port_text)
            if parsed is None:
                self.say("Invalid port number.")
                return
            port = parsed
        text = reader.read("Enter your message: ")
        if not text.strip():
            self.say("Empty message: nothing sent.")
            return
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.MAX_MESSAGE_BYTES:
            self.say(f"Message too long: {size} bytes (the limit is {limits.MAX_MESSAGE_BYTES}).")
            return
        if peer_fp is not None:
            result = node.send_to_peer(peer_fp, text)
        else:
            result = node.send_to_address(host, port, text)
        self.say(describe_send(result))

    def _pick_peer(self, target: str, node: Node) -> PeerChoice:
        """The peer meant by a number from option 2 or a name; neither for an address."""
        if target.isdigit() and len(target) <= 4:
            listing = self._listing or node.active_peers()
            index = int(target)
            if 1 <= index <= len(listing):
                return PeerChoice(fingerprint=listing[index - 1].fingerprint)
            return PeerChoice(error=f"No peer number {index}: see option 2.")
        if _looks_like_address(target):
            return PeerChoice()
        wanted = target.casefold()
        matches = [p for p in node.active_peers() if p.name.casefold() == wanted]
        if len(matches) > 1:
            return PeerChoice(
                error=f"Several peers are called {display_safe(target)}: "
                "use their number from option 2."
            )
        if matches:
            return PeerChoice(fingerprint=matches[0].fingerprint)
        with contextlib.suppress(StorageError):
            pinned = self.store.pins().get(pin_key(target))
            if pinned is not None:
                return PeerChoice(fingerprint=pinned)
        return PeerChoice()

    # -- 2. peers ------------------------------------------------------------

    def query_peers(self, reader: LineReader, node: Node) -> None:
        peers = node.active_peers()
        self._listing = peers
        if not peers:
            self.say("No connected peers.")
            return
        now = time.time()
        rows = [("#", "Name", "Address", "ID", "Verified", "Last seen")]
        for number, peer in enumerate(peers, 1):
            rows.append(
                (
                    str(number),
                    display_safe(peer.name),
                    f"{peer.host}:{peer.port}",
                    short_id(peer.fingerprint),
                    "yes" if peer.verified else "no",
                    f"{max(0, int(now - peer.last_seen))}s ago",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        self.say("Connected Peers:\n" + "\n".join(lines))

    # -- 3 and 7. history ----------------------------------------------------

    def view_history(self, reader: LineReader, node: Node) -> None:
        who = reader.read("Show history with (name or number, empty for everyone): ").strip()
        peer_fp: str | None = None
        if who:
            chosen = self._pick_peer(who, node)
            if chosen.fingerprint is None:
                self.say(chosen.error or f"Unknown peer: {display_safe(who)}")
                return
            peer_fp = chosen.fingerprint
        self._print_history(self.store.history(peer_fp=peer_fp, limit=HISTORY_LIMIT))

    def search_history(self, reader: LineReader, node: Node) -> None:
        text = reader.read("Search for: ").strip()
        if not text:
            self.say("Nothing to search for.")
            return
        self._print_history(self.store.history(limit=HISTORY_LIMIT, search=text))

    def _print_history(self, rows: list[StoredMessage]) -> None:
        if not rows:
            self.say("No messages.")
            return
        header = f"Last {len(rows)} message(s), oldest first:"
        self.say("\n".join([header, *(format_history_row(row) for row in rows)]))

    # -- 4. connect ----------------------------------------------------------

    def connect(self, reader: LineReader, node: Node) -> None:
        target = reader.read("Enter peer's IP: ").strip()
        if not target:
            results = node.connect_all()
            if not results:
                self.say("No active peers to connect to.")
            for r in results:
                self.say(_describe_connect(r.ok, r.host, r.port, r.name, r.detail))
            return
        host = _resolve_host(target)
        if host is None:
            self.say(f"Unknown address: {display_safe(target)}")
            return
        port = _parse_port(reader.read("Enter peer's port number: ").strip())
        if port is None:
            self.say("Invalid port number.")
            return
        r = node.connect(host, port)
        self.say(_describe_connect(r.ok, r.host, r.port, r.name, r.detail))

    # -- 5 and 6. identity ----------------------------------------------------

    def show_fingerprint(self, reader: LineReader, node: Node) -> None:
        self.say(
            f"Your ID: {self.identity.short_id}\n"
            f"Full fingerprint (read it aloud to compare):\n  "
            f"{format_fingerprint(self.identity.fingerprint)}\n"
            f"Data folder: {self.data_dir}"
        )

    def verify_peer(self, reader: LineReader, node: Node) -> None:
        conflicts = node.key_conflicts()
        peers = node.active_peers()
        self._listing = peers
        if conflicts:
            self.say("Peers whose key changed:")
            for number, c in enumerate(conflicts, 1):
                self.say(
                    f"  c{number}. {display_safe(c.name)} at {c.host}:{c.port}: pinned "
                    f"{short_id(c.pinned_fingerprint)}, now {short_id(c.presented_fingerprint)}"
                )
        if not peers and not conflicts:
            self.say("No active peers to verify.")
            return
        choice = reader.read("Peer to verify (number, name, or c<number> to re-trust): ").strip()
        if choice.lower().startswith("c") and choice[1:].isdigit():
            index = int(choice[1:])
            if not 1 <= index <= len(conflicts):
                self.say(f"No changed key number {index}.")
                return
            c = conflicts[index - 1]
            self.say(
                f"{display_safe(c.name)} used to have:\n"
                f"  {format_fingerprint(c.pinned_fingerprint)}\n"
                f"and now presents:\n  {format_fingerprint(c.presented_fingerprint)}\n"
                f"Accept the new key only if {display_safe(c.name)} confirms it in person."
            )
            answer = reader.read("Type yes to trust the new key: ").strip().lower()
            if answer != "yes":
                self.say("Key not accepted.")
                return
            node.retrust(c.presented_fingerprint)
            self.say(f"New key of {display_safe(c.name)} accepted.")
            return
        chosen = self._pick_peer(choice, node) if choice else PeerChoice()
        if chosen.fingerprint is None:
            self.say(chosen.error or "Unknown peer.")
            return
        record = self.store.get_peer(chosen.fingerprint)
        if record is None:
            self.say("That peer has not connected yet: connect first (option 4).")
            return
        self.say(
            f"{display_safe(record.name)}'s fingerprint:\n"
            f"  {format_fingerprint(record.fingerprint)}\n"
            f"Yours:\n  {format_fingerprint(self.identity.fingerprint)}\n"
            f"Compare them with what {display_safe(record.name)} sees in option 5."
        )
        answer = reader.read("Do they match? Type yes to mark verified: ").strip().lower()
        if answer == "yes":
            self.store.set_verified(record.fingerprint, True)
            self.say(f"{display_safe(record.name)} is now verified.")
        else:
            self.say("Not marked as verified.")


# -- formatting (pure, tested) ------------------------------------------------


def describe_event(event: UiEvent) -> str:
    if isinstance(event, MessageArrived):
        return (
            f"Received from {event.host}:{event.port} ({display_safe(event.name)}): "
            f"{display_safe(event.text)}"
        )
    if isinstance(event, PeerDiscovered):
        return f"Discovered peer {display_safe(event.name)} at {event.host}:{event.port}"
    if isinstance(event, PeerConnected):
        return f"Peer {display_safe(event.name)} connected from {event.host}:{event.port}"
    if isinstance(event, PeerOffline):
        return (
            f"Peer {display_safe(event.name)} at {event.host}:{event.port} is offline "
            f"({event.reason}): removed from active peers."
        )
    if isinstance(event, KeyChanged):
        return (
            f"WARNING: the key of peer {display_safe(event.name)} at {event.host}:{event.port} "
            f"has changed! Pinned key: {format_fingerprint(event.pinned_fingerprint)}; "
            f"presented key: {format_fingerprint(event.presented_fingerprint)}. "
            f"Nothing from it is shown until you re-trust it (option 6)."
        )
    if isinstance(event, QueuedDelivered):
        return (
            f"Delivered {event.count} queued message(s) to {display_safe(event.name)} "
            f"({event.host}:{event.port})."
        )
    if isinstance(event, QueuedExpired):
        return (
            f"{event.count} queued message(s) to {display_safe(event.name)} expired "
            f"undelivered: marked failed."
        )
    assert isinstance(event, Problem)
    return f"Problem: {event.text}"


def describe_send(r: SendResult) -> str:
    where = f"{r.host}:{r.port}"
    who = f"{display_safe(r.name)} ({where})" if r.name and r.name != "?" else where
    if r.outcome is Outcome.DELIVERED:
        return f"Message sent to {where}"
    if r.outcome is Outcome.QUEUED:
        return f"{who} is not reachable ({r.detail}): message queued for delivery."
    if r.outcome is Outcome.PENDING:
        return f"Message to {who} sent but not acknowledged yet: it stays queued for delivery."
    if r.outcome is Outcome.KEY_CHANGED:
        return (
            f"WARNING: the key of {who} has changed ({r.detail}). Message not sent: "
            f"check and re-trust it with option 6."
        )
    if r.outcome is Outcome.REFUSED:
        return f"Message refused by {who}: {display_safe(r.detail)}."
    if r.outcome is Outcome.NOT_SENT:
        return f"Message to {who} not sent: {r.detail}."
    return f"Failed to connect to {where} - {r.detail}"


def _describe_connect(ok: bool, host: str, port: int, name: str | None, detail: str) -> str:
    if ok:
        return f"Connected to {host}:{port}" + (f" ({display_safe(name)})" if name else "")
    return f"Failed to connect to {host}:{port} - {detail}"


def _format_time(stamp: float) -> str:
    # Incoming times are bounded on the wire; a row stored before that may hold any.
    try:
        return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "time unknown"


def format_history_row(row: StoredMessage) -> str:
    stamp = _format_time(row.sent_at)
    peer = f"{display_safe(row.peer_name)} ({row.peer_host}:{row.peer_port})"
    arrow = f"You -> {peer}" if row.direction is Direction.OUT else f"{peer} -> You"
    state = row.state.value + (f": {row.detail}" if row.detail else "")
    return f"[{stamp}] {arrow} [{state}]: {display_safe(row.text)}"


def _parse_port(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= 65535 else None


def _looks_like_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return text == "localhost"
    return True


def _resolve_host(text: str) -> str | None:
    """An IPv4 address for what the user typed (an address or a host name)."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(text)
    except (OSError, UnicodeError):
        return None
