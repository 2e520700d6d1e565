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
import functools
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from crypto_utils import Identity, format_fingerprint, short_id
from discovery import broadcast_targets
from peerchat import limits
from peerchat.errors import StorageError
from peerchat.events import (
    ActivePeer,
    DiscoveryBlocked,
    DiscoveryQuiet,
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
from peerchat.ui.targets import PeerChoice, PeerNews, Target, TargetFinder
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
        self._news = PeerNews()
        self._targets = TargetFinder(
            pins=store.pins, say=self.say, news=self._news, broadcasts=_local_broadcasts
        )

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
        if isinstance(event, PeerDiscovered | PeerConnected):
            self._news.heard()  # a menu waiting for this peer's name goes on

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
            self._say_still_queued()
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

    def _say_still_queued(self) -> None:
        try:
            pending = self.store.pending_messages()
        except StorageError:
            return
        if not pending:
            return
        counts = Counter(display_safe(row.peer_name) for row in pending)
        each = ", ".join(f"{_messages(n)} to {name}" for name, n in counts.items())
        self.say(
            f"Still queued: {each}. They will be sent when you next run peer_chat "
            "with this profile and the recipient is online."
        )

    def _dispatch(self, choice: str, reader: LineReader, node: Node) -> None:
        option, _, rest = choice.partition(" ")
        if option == "3":  # "3 Bob", "3 2": one peer's history, with no question asked
            self.view_history(reader, node, rest.strip())
            return
        actions: dict[str, Callable[[LineReader, Node], None]] = {
            "1": self.send_message,
            "2": self.query_peers,
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
        answer = reader.read("Enter recipient's IP: ").strip()
        if not answer:
            self.say("No recipient given.")
            return
        target = self._find_target(answer, node)
        port_text = reader.read("Enter recipient's port number: ") if target.asks_port else ""
        # Every question is asked before any answer is judged, as the original
        # did: a script's next line is always read by the prompt it was written for.
        text = reader.read("Enter your message: ")
        if target.error:
            self.say(f"{target.error} Message not sent.")
            return
        port = _parse_port(port_text.strip())
        if target.fingerprint is None and port is None:
            self.say("Invalid port number.")
            return
        if not text.strip():
            self.say("Empty message: nothing sent.")
            return
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.MAX_MESSAGE_BYTES:
            self.say(f"Message too long: {size} bytes (the limit is {limits.MAX_MESSAGE_BYTES}).")
            return
        if target.fingerprint is not None:
            result = node.send_to_peer(target.fingerprint, text)
        else:
            assert target.host is not None and port is not None
            result = node.send_to_address(target.host, port, text)
        self.say(describe_send(result))

    def _pick_peer(self, target: str, node: Node) -> PeerChoice:
        """The peer meant by a number from option 2 or a name; neither for an address."""
        return self._targets.known_peer(target, self._listing, node.active_peers)

    def _find_target(self, answer: str, node: Node) -> Target:
        """What options 1 and 4 were given; with discovery on, a new name is waited for."""
        wait = limits.NAME_DISCOVERY_WAIT if node.config.discovery else 0.0
        return self._targets.find(answer, self._listing, node.active_peers, wait=wait)

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

    def view_history(self, reader: LineReader, node: Node, who: str = "") -> None:
        """Everyone's last messages at once, as the original; `3 NAME` or `3 NUMBER`: one peer's."""
        if not who:
            rows = self.store.history(limit=HISTORY_LIMIT)
            header = f"Last {_messages(len(rows))}, oldest first (3 NAME shows one peer's):"
            self._print_history(rows, header)
            return
        chosen = self._pick_peer(who, node)
        if chosen.fingerprint is None:
            self.say(chosen.error or f"Unknown peer: {display_safe(who)}")
            return
        rows = self.store.history(peer_fp=chosen.fingerprint, limit=HISTORY_LIMIT)
        record = self.store.get_peer(chosen.fingerprint)
        name = display_safe(record.name if record is not None else who)
        self._print_history(rows, f"Last {_messages(len(rows))} with {name}, oldest first:")

    def search_history(self, reader: LineReader, node: Node) -> None:
        text = reader.read("Search for: ").strip()
        if not text:
            self.say("Nothing to search for.")
            return
        rows = self.store.history(limit=HISTORY_LIMIT, search=text)
        quoted = f'"{display_safe(text)}"'
        if not rows:
            self.say(f"No messages containing {quoted}.")
            return
        last = "The last " if len(rows) == HISTORY_LIMIT else ""
        self._print_history(rows, f"{last}{_messages(len(rows))} containing {quoted}:")

    def _print_history(self, rows: list[StoredMessage], header: str) -> None:
        if not rows:
            self.say("No messages.")
            return
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
        found = self._find_target(target, node)
        port_text = reader.read("Enter peer's port number: ") if found.asks_port else ""
        if found.error:
            self.say(found.error)
            return
        if found.fingerprint is not None:
            address = self._address_of(found.fingerprint, node)
            if address is None:
                self.say("No address is known for that peer: type its IP instead.")
                return
            host, port = address
        else:
            parsed = _parse_port(port_text.strip())
            if parsed is None:
                self.say("Invalid port number.")
                return
            assert found.host is not None
            host, port = found.host, parsed
        r = node.connect(host, port)
        self.say(_describe_connect(r.ok, r.host, r.port, r.name, r.detail))

    def _address_of(self, fingerprint: str, node: Node) -> tuple[str, int] | None:
        """Where a peer is listed now, else where it was last seen."""
        for peer in node.active_peers():
            if peer.fingerprint == fingerprint:
                return peer.host, peer.port
        with contextlib.suppress(StorageError):
            record = self.store.get_peer(fingerprint)
            if record is not None and record.host and record.port:
                return record.host, record.port
        return None

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
        if not choice:
            self.say(
                "No peer chosen: type a peer's name or its number from option 2"
                + (", or c<number> for a changed key." if conflicts else ".")
            )
            return
        chosen = self._pick_peer(choice, node)
        if chosen.fingerprint is None:
            self.say(chosen.error or f"Unknown peer: {display_safe(choice)}")
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
            f"has changed (was {short_id(event.pinned_fingerprint)}, now "
            f"{short_id(event.presented_fingerprint)}); nothing from it is shown until you "
            f"compare fingerprints and re-trust it in option 6."
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
    if isinstance(event, DiscoveryBlocked):
        return (
            f"Discovery: cannot broadcast to {event.address}:{event.port} ({event.reason}); "
            f"peers can still be reached by address"
        )
    if isinstance(event, DiscoveryQuiet):
        return (
            f"Discovery: no other peer heard on UDP port {event.port} in {event.seconds:g} s "
            f"(this network may block broadcast); peers can still be reached by address"
        )
    assert isinstance(event, Problem)
    return f"Problem: {event.text}"


def describe_send(r: SendResult) -> str:
    where = f"{r.host}:{r.port}"
    who = f"{display_safe(r.name)} ({where})" if r.name and r.name != "?" else where
    if r.outcome is Outcome.DELIVERED:
        return f"Message sent to {where}"
    if r.outcome is Outcome.QUEUED:
        return (
            f"{who} is not reachable ({r.detail}): message queued for delivery. "
            f"It goes out when both of you are online."
        )
    if r.outcome is Outcome.PENDING:
        return f"Message to {who} sent but not acknowledged yet: it stays queued for delivery."
    if r.outcome is Outcome.KEY_CHANGED:
        # The warning itself was said once, when the new key was first presented.
        return f"Message to {who} not sent: its key has changed (see option 6)."
    if r.outcome is Outcome.REFUSED:
        return f"Message refused by {who}: {display_safe(r.detail)}."
    if r.outcome is Outcome.NOT_SENT:
        return f"Message to {who} not sent: {r.detail}."
    return f"Failed to connect to {where} - {r.detail}"


def _describe_connect(ok: bool, host: str, port: int, name: str | None, detail: str) -> str:
    if ok:
        return f"Connected to {host}:{port}" + (f" ({display_safe(name)})" if name else "")
    return f"Failed to connect to {host}:{port} - {detail}"


def format_history_row(row: StoredMessage) -> str:
    stamp = datetime.fromtimestamp(row.sent_at).strftime("%Y-%m-%d %H:%M:%S")
    peer = f"{display_safe(row.peer_name)} ({row.peer_host}:{row.peer_port})"
    arrow = f"You -> {peer}" if row.direction is Direction.OUT else f"{peer} -> You"
    state = row.state.value + (f": {row.detail}" if row.detail else "")
    return f"[{stamp}] {arrow} [{state}]: {display_safe(row.text)}"


def _parse_port(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= 65535 else None


def _messages(count: int) -> str:
    return f"{count} message" + ("" if count == 1 else "s")


@functools.cache
def _local_broadcasts() -> frozenset[str]:
    """The limited broadcast and this host's directed ones: never a peer's address."""
    return frozenset(broadcast_targets(limits.LIMITED_BROADCAST))
