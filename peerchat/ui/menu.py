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
import math
import shutil
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
from peerchat.errors import NotAnswering, StorageError
from peerchat.events import (
    FILE_EVENTS,
    ActivePeer,
    CodeRefused,
    CodeRequested,
    CodeShown,
    ConnectResult,
    DiscoveryBlocked,
    DiscoveryQuiet,
    Ending,
    KeyChanged,
    LegacyMessageArrived,
    LegacyPeer,
    LegacyPeerDiscovered,
    LegacyPeerLeft,
    MessageArrived,
    Outcome,
    PeerConnected,
    PeerDiscovered,
    PeerOffline,
    PeerRenamed,
    Problem,
    QueuedDelivered,
    QueuedExpired,
    SendResult,
    UiEvent,
    VerificationEnded,
)
from peerchat.net.node import Node
from peerchat.net.seeds import SeedStore, StoredSeed
from peerchat.net.verification import Verifier
from peerchat.policy.sanitize import display_safe, fit_rows
from peerchat.protocol.sas import format_code, format_safety_number, safety_number
from peerchat.ui import file_menu, legacy_menu
from peerchat.ui.file_menu import FileTransferControl, Recipient
from peerchat.ui.legacy_menu import LegacyBridge
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
10. Seed peers
0. Quit"""

HISTORY_LIMIT = 50
SAFETY_NUMBERS_LISTED = 10  # option 5 lists this many connected peers' safety numbers


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
    def __init__(
        self,
        *,
        store: HistoryStore,
        identity: Identity,
        data_dir: Path,
        legacy: LegacyBridge | None = None,
        seeds: SeedStore | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.data_dir = data_dir
        self.legacy = legacy  # the legacy bridge, only with --legacy-port
        self._legacy_listing: list[LegacyPeer] = []  # option 2's legacy rows, for option 8
        self.seeds = seeds
        self._lock = threading.Lock()
        self._terminal: TextIO = sys.stdout  # the real stdout, even under patch_stdout
        # Columns of the terminal, to cut lines that carry a peer's text into marked
        # rows; None when output is not a terminal (nothing wraps there).
        self._screen_width: Callable[[], int | None] = lambda: None
        self._listing: list[ActivePeer] = []  # rows of the last option 2, for "send to number"
        # Code comparison, set by the program once the node that offers it exists.
        self.verifier: Verifier | None = None
        self._news = PeerNews()
        self._targets = TargetFinder(
            pins=lambda: self.store.pins(),  # noqa: PLW0108 (the store may be set later)
            say=self.say,
            news=self._news,
            broadcasts=_local_broadcasts,
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
        if isinstance(event, MessageArrived):  # the only news that carries a peer's free text
            text = self._fit(text)
        with self._lock:
            print(text, flush=True)
        if isinstance(event, PeerDiscovered | PeerConnected):
            self._news.heard()  # a menu waiting for this peer's name goes on

    # -- the loop ------------------------------------------------------------

    def run(self, node: Node, *, port: int) -> None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self._terminal = sys.stdout
        if interactive:
            self._screen_width = lambda: shutil.get_terminal_size().columns
        with self._output_context(interactive):
            reader: LineReader = TerminalReader() if interactive else PipeReader(self._write_prompt)
            self.say(f"Server listening on port {port}...")
            self.say(
                f"Your ID: {self.identity.short_id}  "
                f"({format_fingerprint(self.identity.fingerprint)})"
            )
            self.say(f"Data folder: {self.data_dir}")
            if self.legacy is not None:
                self.say(legacy_menu.banner(self.legacy.port))
            node.run()
            try:
                while True:
                    self.say(self.menu_text(node))
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

    def menu_text(self, node: Node) -> str:
        """The menu: option 8 with the legacy port, 11 and 12 when the node moves files."""
        text = MENU if self.legacy is None else legacy_menu.with_legacy_option(MENU)
        if isinstance(node, FileTransferControl):
            text = text.replace("\n0. Quit", f"\n{file_menu.MENU_LINES}\n0. Quit")
        return text

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
            "10": self.seed_peers,
        }
        if self.legacy is not None:
            actions[legacy_menu.OPTION] = self.send_legacy
        if isinstance(node, FileTransferControl):
            actions[file_menu.SEND_FILE] = self.send_file
            actions[file_menu.ANSWER_OFFERS] = self.answer_file_offers
        action = actions.get(choice)
        if action is None:
            self.say("Invalid choice. Please enter a number from the menu.")
            return
        try:
            action(reader, node)
        except NotAnswering as exc:
            self.say(f"Not done: {exc}. Please try again.")

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

    # -- 11 and 12. files ----------------------------------------------------

    def send_file(self, reader: LineReader, node: Node) -> None:
        assert isinstance(node, FileTransferControl)  # offered only then (_dispatch)
        file_menu.send_file(reader, self.say, node, lambda r: self._file_recipient(r, node))

    def answer_file_offers(self, reader: LineReader, node: Node) -> None:
        assert isinstance(node, FileTransferControl)
        file_menu.answer_offers(reader, self.say, node)

    def _file_recipient(self, reader: LineReader, node: Node) -> Recipient:
        """The recipient as option 1 asks for it; an address is reached (or known) first."""
        answer = reader.read("Enter recipient's IP: ").strip()
        if not answer:
            return Recipient(error="No recipient given.")
        found = self._find_target(answer, node)
        port_text = reader.read("Enter recipient's port number: ") if found.asks_port else ""
        if found.error or found.fingerprint is not None:
            return Recipient(found.fingerprint, found.error)
        port = _parse_port(port_text.strip())
        if port is None:
            return Recipient(error="Invalid port number.")
        assert found.host is not None
        host = found.host
        connected = node.connect(host, port)
        known = None
        with contextlib.suppress(StorageError):
            known = self.store.peer_by_address(host, port)
        if known is None:
            why = connected.detail or "no peer answered there"
            return Recipient(
                error=f"Failed to connect to {host}:{port} - {why}; "
                "never reached before, so the offer cannot wait for it."
            )
        return Recipient(known.fingerprint)

    # -- 2. peers ------------------------------------------------------------

    def query_peers(self, reader: LineReader, node: Node) -> None:
        self._show_keyed_peers(node)
        if self.legacy is not None:
            self._legacy_listing = self.legacy.peers()
            self.say(legacy_menu.legacy_section(self._legacy_listing, time.time()))

    def _show_keyed_peers(self, node: Node) -> None:
        peers = node.active_peers()
        self._listing = peers
        if not peers:
            self.say("No connected peers.")
            return
        now = time.time()
        rows = [("#", "Name", "Address", "ID", "Verified", "Last seen", "Found")]
        for number, peer in enumerate(peers, 1):
            rows.append(
                (
                    str(number),
                    display_safe(peer.name),
                    f"{peer.host}:{peer.port}",
                    short_id(peer.fingerprint),
                    "yes" if peer.verified else "no",
                    f"{max(0, int(now - peer.last_seen))}s ago",
                    display_safe(peer.found) or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        self.say("Connected Peers:\n" + "\n".join(lines))

    # -- 8. legacy peers (unencrypted) ---------------------------------------

    def send_legacy(self, reader: LineReader, node: Node) -> None:
        bridge = self.legacy
        if bridge is None:
            return
        target = reader.read("Enter legacy peer's IP (or L-number from option 2): ").strip()
        if not target:
            self.say("No recipient given.")
            return
        number = legacy_menu.listed_number(target)
        if number is not None:
            listing = self._legacy_listing or bridge.peers()
            if not 1 <= number <= len(listing):
                self.say(f"No legacy peer number L{number}: see option 2.")
                return
            host, port = listing[number - 1].host, listing[number - 1].port
        else:
            found = self._targets.address(target)
            if found.host is None:
                self.say(found.error or f"Unknown address: {display_safe(target)}")
                return
            parsed = _parse_port(reader.read("Enter legacy peer's port number: ").strip())
            if parsed is None:
                self.say("Invalid port number.")
                return
            host, port = found.host, parsed
        if any((p.host, p.port) == (host, port) for p in node.active_peers()):
            self.say(f"{host}:{port} is a peer_chat peer: use option 1 (encrypted).")
            return
        text = reader.read("Enter your message: ")
        if not text.strip():
            self.say("Empty message: nothing sent.")
            return
        self.say(legacy_menu.describe_legacy_send(bridge.send(host, port, text)))

    # -- 3 and 7. history ----------------------------------------------------

    def view_history(self, reader: LineReader, node: Node, who: str = "") -> None:
        """Everyone's last messages at once, as the original; `3 NAME` or `3 NUMBER`: one peer's."""
        if not who:
            rows = self.store.history(limit=HISTORY_LIMIT)
            header = f"Last {_messages(len(rows))}, oldest first (3 NAME shows one peer's):"
            self._print_history(rows, header, self._verified_keys())
            return
        chosen = self._pick_peer(who, node)
        if chosen.fingerprint is None:
            self.say(chosen.error or f"Unknown peer: {display_safe(who)}")
            return
        rows = self.store.history(peer_fp=chosen.fingerprint, limit=HISTORY_LIMIT)
        record = self.store.get_peer(chosen.fingerprint)
        name = display_safe(record.name if record is not None else who)
        self._print_history(
            rows, f"Last {_messages(len(rows))} with {name}, oldest first:", self._verified_keys()
        )

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
        self._print_history(
            rows, f"{last}{_messages(len(rows))} containing {quoted}:", self._verified_keys()
        )

    def _verified_keys(self) -> frozenset[str]:
        with contextlib.suppress(StorageError):
            return frozenset(p.fingerprint for p in self.store.known_peers() if p.verified)
        return frozenset()

    def _print_history(
        self, rows: list[StoredMessage], header: str, verified: frozenset[str] = frozenset()
    ) -> None:
        if not rows:
            self.say("No messages.")
            return
        lines = (
            self._fit(format_history_row(row, verified=row.peer_fp in verified)) for row in rows
        )
        self.say("\n".join([header, *lines]))

    def _fit(self, line: str) -> str:
        """`line` in marked rows of the terminal's width, so no row can pass for a line."""
        columns = self._screen_width()
        return line if columns is None else fit_rows(line, columns)

    # -- 4. connect ----------------------------------------------------------

    def connect(self, reader: LineReader, node: Node) -> None:
        target = reader.read("Enter peer's IP: ").strip()
        if not target:
            results = node.connect_all()
            if not results:
                self.say("No active peers to connect to.")
            for r in results:
                self.say(describe_connect(r))
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
        self.say(describe_connect(node.connect(host, port)))

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
        # Listed, never asked for: option 5 stays a question-free path.
        peers = node.active_peers()
        if not peers:
            return
        lines = ["Safety numbers with connected peers (their screens show the same):"]
        for peer in peers[:SAFETY_NUMBERS_LISTED]:
            lines.append(f"  {display_safe(peer.name)} ({short_id(peer.fingerprint)}):")
            number = safety_number(self.identity.fingerprint, peer.fingerprint)
            lines += (f"    {line}" for line in format_safety_number(number))
        if len(peers) > SAFETY_NUMBERS_LISTED:
            lines.append(f"  ... and {len(peers) - SAFETY_NUMBERS_LISTED} more: see option 6.")
        self.say("\n".join(lines))

    def verify_peer(self, reader: LineReader, node: Node) -> None:
        conflicts = node.key_conflicts()
        peers = node.active_peers()
        self._listing = peers
        offers = self.verifier.waiting() if self.verifier is not None else []
        if conflicts:
            self.say("Peers whose key changed:")
            for number, c in enumerate(conflicts, 1):
                self.say(
                    f"  c{number}. {display_safe(c.name)} at {c.host}:{c.port}: pinned "
                    f"{short_id(c.pinned_fingerprint)}, now {short_id(c.presented_fingerprint)}"
                )
            hidden = node.key_conflicts_not_listed()
            if hidden:
                self.say(f"  ... and {hidden} more new keys not listed (most likely a flood).")
        for waiting in offers:
            name = display_safe(waiting.name)
            self.say(
                f"{name} ({short_id(waiting.fingerprint)}) asks to compare a code: pick {name}."
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
            online = next((p for p in peers if p.fingerprint == c.pinned_fingerprint), None)
            if online is not None:
                self.say(
                    f"The pinned key of {display_safe(c.name)} ({short_id(c.pinned_fingerprint)}) "
                    f"is online right now at {online.host}:{online.port}: the new key is most "
                    f"likely someone else. Keep the pinned one."
                )
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
        offer = next((o for o in offers if o.fingerprint == chosen.fingerprint), None)
        if offer is not None:  # that peer asked: its code is the question
            self._compare_code(reader, offer)
            return
        record = self.store.get_peer(chosen.fingerprint)
        if record is None:
            self.say("That peer has not connected yet: connect first (option 4).")
            return
        name = display_safe(record.name)
        safety = format_safety_number(safety_number(self.identity.fingerprint, record.fingerprint))
        can_compare = self.verifier is not None and any(
            p.fingerprint == record.fingerprint for p in peers
        )
        self.say(
            f"{name}'s fingerprint:\n"
            f"  {format_fingerprint(record.fingerprint)}\n"
            f"Yours:\n  {format_fingerprint(self.identity.fingerprint)}\n"
            f"Compare them with what {name} sees in option 5.\n"
            f"Or compare your safety number ({name} sees the same one):\n"
            + "\n".join(f"  {line}" for line in safety)
            + (f"\nOr type code to compare a six-digit code with {name}." if can_compare else "")
        )
        answer = reader.read("Do they match? Type yes to mark verified: ").strip().lower()
        if answer == "yes":
            node.verify(record.fingerprint)
            self.say(f"{name} is now verified.")
        elif answer == "code" and can_compare:
            self._start_code(reader, record.fingerprint, record.name)
        else:
            self.say("Not marked as verified.")

    def _start_code(self, reader: LineReader, fingerprint: str, peer_name: str) -> None:
        assert self.verifier is not None
        self.say(f"Asking {display_safe(peer_name)} to compare a code...")
        result = self.verifier.start(fingerprint)
        if isinstance(result, CodeRefused):
            self.say(describe_ending(peer_name, result.ending, result.retry_after))
            return
        self._compare_code(reader, result)

    def _compare_code(self, reader: LineReader, offer: CodeShown) -> None:
        assert self.verifier is not None
        name = display_safe(offer.name)
        code = format_code(offer.code)
        self.say(f"Code for you and {name}: {code}")
        reply = reader.read(f"Does {name}'s screen show {code}? Type yes or no: ").strip().lower()
        same = {"yes": True, "no": False}.get(reply)
        ending = self.verifier.answer(offer, same)
        if ending is None:
            self.say(f"Waiting for {name}'s answer: the result will be shown here.")
        else:
            self.say(describe_ending(offer.name, ending))

    # -- 10. seed peers ------------------------------------------------------

    def seed_peers(self, reader: LineReader, node: Node) -> None:
        seeds = self.seeds.seeds() if self.seeds is not None else []
        if self.seeds is None or not seeds:
            self.say("No seed peers. Start with --peer HOST:PORT to add one.")
            return
        self.say("Seed peers (tried at start and while they are away):")
        for number, entry in enumerate(seeds, 1):
            self.say(f"  {number}. {format_seed(entry)}")
        choice = reader.read("Seed to remove (number, empty to keep them all): ").strip()
        if not choice:
            return
        if not choice.isdigit() or not 1 <= int(choice) <= len(seeds):
            self.say(f"No seed number {display_safe(choice)}.")
            return
        seed = seeds[int(choice) - 1].seed
        if self.seeds.remove(seed):
            self.say(f"Seed {display_safe(str(seed))} removed: it is no longer tried.")
        else:
            self.say(f"Seed {display_safe(str(seed))} was already removed.")


# -- formatting (pure, tested) ------------------------------------------------


def format_seed(entry: StoredSeed) -> str:
    """One seed in option 10: where, and who answered there last."""
    where = display_safe(str(entry.seed))
    if entry.address is not None and entry.address != entry.seed.host:
        where += f" ({entry.address})"
    if entry.fingerprint is None or entry.last_reached is None:
        return f"{where}: not reached yet"
    stamp = datetime.fromtimestamp(entry.last_reached).strftime("%Y-%m-%d %H:%M")
    who = display_safe(entry.name or "?")
    return f"{where}: {who} [{short_id(entry.fingerprint)}], last reached {stamp}"


def describe_event(event: UiEvent) -> str:
    if isinstance(event, LegacyMessageArrived | LegacyPeerDiscovered | LegacyPeerLeft):
        return legacy_menu.describe_legacy_event(event)
    if isinstance(event, FILE_EVENTS):
        return file_menu.describe_file_event(event)
    if isinstance(event, MessageArrived):
        who = display_safe(event.name)  # the marks follow a comma, which no name contains
        if event.verified:
            who += ", verified"
        elif event.verified is False:
            who += f", ID {short_id(event.fingerprint)}"
        return f"Received from {event.host}:{event.port} ({who}): {display_safe(event.text)}"
    if isinstance(event, PeerDiscovered):
        return f"Discovered peer {display_safe(event.name)} at {event.host}:{event.port}"
    if isinstance(event, PeerConnected):
        return f"Peer {display_safe(event.name)} connected from {event.host}:{event.port}"
    if isinstance(event, PeerOffline):
        return (
            f"Peer {display_safe(event.name)} at {event.host}:{event.port} is offline "
            f"({event.reason}): removed from active peers."
        )
    if isinstance(event, PeerRenamed):
        line = (
            f"Peer {display_safe(event.old_name)} ({short_id(event.fingerprint)}) at "
            f"{event.host}:{event.port} now calls itself {display_safe(event.name)}."
        )
        if event.was_verified:
            line += f" It is verified as {display_safe(event.old_name)} only."
        return line
    if isinstance(event, KeyChanged):
        more = f" (and {event.more} more new keys under that name)" if event.more else ""
        if event.was_verified:
            return _verified_key_changed(event) + more
        return (
            f"WARNING: the key of peer {display_safe(event.name)} at {event.host}:{event.port} "
            f"has changed (was {short_id(event.pinned_fingerprint)}, now "
            f"{short_id(event.presented_fingerprint)}); nothing from it is shown until you "
            f"compare fingerprints and re-trust it in option 6.{more}"
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
    if isinstance(event, CodeRequested):
        name = display_safe(event.name)
        return (
            f"{name} ({short_id(event.fingerprint)}) asks to compare a code with you: "
            f"choose 6 and pick {name}."
        )
    if isinstance(event, VerificationEnded):
        return describe_ending(event.name, event.ending)
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


def _verified_key_changed(event: KeyChanged) -> str:
    """The loudest warning: a key the user had verified is replaced."""
    name = display_safe(event.name)
    bar = "!" * 72
    return (
        f"{bar}\n"
        f"WARNING: the key of VERIFIED peer {name} at {event.host}:{event.port} has changed!\n"
        f"You verified {name}'s key, and this is a different one: someone may be "
        f"impersonating {name}.\n"
        f"Verified key:  {format_fingerprint(event.pinned_fingerprint)}\n"
        f"Presented key: {format_fingerprint(event.presented_fingerprint)}\n"
        f"Nothing from it is shown. Re-trust it (option 6) only after {name} confirms "
        f"the new key in person.\n"
        f"{bar}"
    )


_MIDDLE = "someone may be in the middle between you and {name}: nothing was marked verified."


def describe_ending(peer_name: str, ending: Ending, retry_after: float = 0.0) -> str:
    """What the user is told when a code comparison ends or cannot start."""
    name = display_safe(peer_name)
    middle = _MIDDLE.format(name=name)
    texts = {
        Ending.VERIFIED: f"{name} is now verified: both of you saw the same code.",
        Ending.SAID_NO: f"WARNING: the codes differ; {middle}",
        Ending.PEER_SAID_NO: f"WARNING: {name} saw a different code; {middle}",
        Ending.BAD_REVEAL: f"WARNING: the code comparison with {name} was tampered with; {middle}",
        Ending.CANCELLED: f"Code comparison with {name} cancelled: nothing was marked verified.",
        Ending.PEER_CANCELLED: (
            f"{name} cancelled the code comparison: nothing was marked verified."
        ),
        Ending.EXPIRED: f"The code comparison with {name} expired: nothing was marked verified.",
        Ending.NO_RESPONSE: f"{name} did not take part in the code comparison.",
        Ending.RATE_LIMITED: (
            f"Too many failed code comparisons with {name}: "
            f"try again in {max(1, math.ceil(retry_after))} s."
        ),
        Ending.PEER_RATE_LIMITED: (
            f"{name} refuses code comparisons for now (too many failed ones): try again later."
        ),
        Ending.NOT_CONNECTED: f"{name} is not connected: connect first (option 4).",
        Ending.SESSION_LOST: (
            f"The connection to {name} closed during the code comparison: "
            f"nothing was marked verified."
        ),
        Ending.SUPERSEDED: f"{name} started a new code comparison: the earlier one is void.",
        Ending.UNEXPECTED: (
            f"The code comparison with {name} failed (a message out of order): "
            f"nothing was marked verified."
        ),
        Ending.IN_PROGRESS: f"You have answered already: waiting for {name}'s answer.",
        Ending.ENDED_EARLIER: "That code comparison had already ended (see above).",
    }
    return texts[ending]


def describe_send(r: SendResult) -> str:
    where = f"{r.host}:{r.port}"
    who = f"{display_safe(r.name)} ({where})" if r.name and r.name != "?" else where
    if r.outcome is Outcome.DELIVERED:
        if r.fingerprint is None:
            return f"Message sent to {where}"
        return f"Message sent to {where} ({display_safe(r.name or '?')}, {short_id(r.fingerprint)})"
    if r.outcome is Outcome.OTHER_KEY:
        expected = _named(r.expected_name, r.expected_fingerprint)
        return (
            f"Message not sent: at {where} a different key answered: "
            f"{_named(r.name, r.fingerprint)}, not {expected} who was last reached there. "
            f"To write to it, choose it by name or number."
        )
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


def describe_connect(r: ConnectResult) -> str:
    if not r.ok:
        return f"Failed to connect to {r.host}:{r.port} - {r.detail}"
    line = f"Connected to {r.host}:{r.port}" + (f" ({display_safe(r.name)})" if r.name else "")
    if r.expected_fingerprint is not None:
        line += (
            f". Note: a different key answered there: {_named(r.name, r.fingerprint)}, not "
            f"{_named(r.expected_name, r.expected_fingerprint)} who was last reached there."
        )
    return line


def _named(name: str | None, fingerprint: str | None) -> str:
    """A peer as the user can tell it apart: its name and its short ID."""
    sid = short_id(fingerprint) if fingerprint else "?"
    return f"{display_safe(name or '?')} ({sid})"


def format_history_row(row: StoredMessage, *, verified: bool = False) -> str:
    mark = ", verified" if verified else ""
    peer = f"{display_safe(row.peer_name)} ({display_safe(row.peer_host)}:{row.peer_port}{mark})"
    arrow = f"You -> {peer}" if row.direction is Direction.OUT else f"{peer} -> You"
    if row.legacy:
        state = legacy_menu.legacy_state(row)
    else:
        state = row.state.value + (f": {display_safe(row.detail)}" if row.detail else "")
    text = "(cannot be read: altered or moved)" if row.unreadable else display_safe(row.text)
    return f"[{_history_time(row.sent_at)}] {arrow} [{state}]: {text}"


def _history_time(sent_at: float) -> str:
    """Local time of a stored row; any float (a damaged or hostile row) gives a line."""
    if not 0.0 <= sent_at <= limits.MAX_TIMESTAMP:  # also false for NaN
        return "time unknown"
    try:
        return datetime.fromtimestamp(sent_at).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "time unknown"


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
