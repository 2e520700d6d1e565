"""The numbered menu, as the original drew it, and how the node's news is shown.

On a terminal the input line is prompt_toolkit's, under `patch_stdout`, so a
message that arrives while the user types is printed above the line without
destroying it. When standard input is not a terminal the menu reads plain
lines, so a peer can be scripted; end of input quits as 0 does.

Everything a peer chose (its name, its messages) passes through
`display_safe` before it reaches the screen.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import ipaddress
import math
import os
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
from peerchat.errors import NotAnswering, StorageError
from peerchat.events import (
    ActivePeer,
    CodeRefused,
    CodeRequested,
    CodeShown,
    Ending,
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
    VerificationEnded,
)
from peerchat.net.node import Node
from peerchat.net.verification import Verifier
from peerchat.policy.sanitize import display_safe
from peerchat.policy.trust import pin_key
from peerchat.protocol.sas import format_code, format_safety_number, safety_number
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
SAFETY_NUMBERS_LISTED = 10  # option 5 lists this many connected peers' safety numbers


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
    """Plain lines from a non-terminal standard input (scripts, tests).

    Lines end at \\n, as sys.stdin splits them, with trailing \\r dropped. The
    output is flushed only when the next line has not arrived yet: a script's
    commands run back to back with one write for all of them, while whoever
    types into the pipe sees each prompt before the menu waits for the answer.
    """

    _CHUNK = 65536

    def __init__(
        self,
        write: Callable[[str], None],
        flush: Callable[[], None],
        read_chunk: Callable[[int], bytes] | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
    ) -> None:
        self._write = write
        self._flush = flush
        if read_chunk is None:
            fd = sys.stdin.fileno()  # read by this reader only: no buffer sits above it
            read_chunk = functools.partial(os.read, fd)
        self._read_chunk = read_chunk
        decoder = codecs.getincrementaldecoder(encoding or sys.stdin.encoding or "utf-8")
        self._decoder = decoder(errors or sys.stdin.errors or "strict")
        self._text = ""  # decoded input; lines before _pos were returned
        self._pos = 0
        self._ended = False

    def read(self, prompt: str) -> str:
        self._write(prompt)
        text, pos = self._text, self._pos
        end = text.find("\n", pos)
        while end < 0 and not self._ended:
            self._flush()  # about to wait: show what was said so far
            chunk = self._read_chunk(self._CHUNK)
            self._ended = not chunk
            text = self._text = text[pos:] + self._decoder.decode(chunk, final=self._ended)
            pos = 0
            end = text.find("\n")
        if end < 0:
            if pos >= len(text):
                raise EOFError
            end = len(text)  # a last line without a newline
        self._pos = end + 1
        return text[pos:end].rstrip("\r")


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
        # On a terminal every line is written at once; reading a pipe, the menu's own
        # output is kept until the menu waits (PipeReader, `_before_waiting`) or news
        # comes, then written in one go.
        self._flush_each = True
        self._pending: list[str] = []
        self._listing: list[ActivePeer] = []  # rows of the last option 2, for "send to number"
        # Code comparison, set by the program once the node that offers it exists.
        self.verifier: Verifier | None = None

    # -- output --------------------------------------------------------------

    def say(self, text: str) -> None:
        """The menu's own output, printed while no prompt is on screen.

        Written straight to the terminal: through patch_stdout it would be
        flushed by another thread, which could decide "no prompt" just before
        the next prompt is drawn and then write over it.
        """
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        with self._lock:
            if self._flush_each:
                self._terminal.write(text)
                self._terminal.flush()
            else:
                self._pending.append(text)

    def _before_waiting(self) -> None:
        """About to wait (for input or the network): show what the menu said so far."""
        with self._lock:
            self._write_pending()
            self._terminal.flush()

    def _write_pending(self, then: str = "") -> None:
        """Write the menu's kept output, and `then` after it (lock held)."""
        if self._pending:
            then = "".join(self._pending) + then
            self._pending.clear()
        if then:
            self._terminal.write(then)

    def show_event(self, event: UiEvent) -> None:
        """Called from the network thread: one line per piece of news.

        On a terminal, sys.stdout is then patch_stdout's proxy, which prints the
        line above the prompt and draws the prompt again with what was typed.
        """
        text = describe_event(event) + "\n"
        with self._lock:
            if self._pending:  # the menu's own lines first, in one write with the news
                self._write_pending(text)
                self._terminal.flush()
                return
            sys.stdout.write(text)
            sys.stdout.flush()

    # -- the loop ------------------------------------------------------------

    def run(self, node: Node, *, port: int) -> None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self._terminal = sys.stdout
        self._flush_each = interactive
        with self._output_context(interactive):
            reader: LineReader = (
                TerminalReader() if interactive else PipeReader(self._write, self._before_waiting)
            )
            self.say(f"Server listening on port {port}...")
            self.say(
                f"Your ID: {self.identity.short_id}  "
                f"({format_fingerprint(self.identity.fingerprint)})"
            )
            self.say(f"Data folder: {self.data_dir}")
            self._before_waiting()  # the banner is out before any news
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
            self._before_waiting()

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
        try:
            action(reader, node)
        except NotAnswering as exc:
            self.say(f"Not done: {exc}. Please try again.")

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
        self._before_waiting()
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
        verified: set[str] = set()
        with contextlib.suppress(StorageError):
            verified = {p.fingerprint for p in self.store.known_peers() if p.verified}
        header = f"Last {len(rows)} message(s), oldest first:"
        lines = (format_history_row(row, verified=row.peer_fp in verified) for row in rows)
        self.say("\n".join([header, *lines]))

    # -- 4. connect ----------------------------------------------------------

    def connect(self, reader: LineReader, node: Node) -> None:
        target = reader.read("Enter peer's IP: ").strip()
        if not target:
            self._before_waiting()
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
        self._before_waiting()
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
            self._before_waiting()
            node.retrust(c.presented_fingerprint)
            self.say(f"New key of {display_safe(c.name)} accepted.")
            return
        chosen = self._pick_peer(choice, node) if choice else PeerChoice()
        if chosen.fingerprint is None:
            self.say(chosen.error or "Unknown peer.")
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
        self._before_waiting()
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
        self._before_waiting()
        ending = self.verifier.answer(offer, same)
        if ending is None:
            self.say(f"Waiting for {name}'s answer: the result will be shown here.")
        else:
            self.say(describe_ending(offer.name, ending))


# -- formatting (pure, tested) ------------------------------------------------


def describe_event(event: UiEvent) -> str:
    if isinstance(event, MessageArrived):
        mark = ", verified" if event.verified else ""  # a comma no name can contain
        return (
            f"Received from {event.host}:{event.port} ({display_safe(event.name)}{mark}): "
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
    if isinstance(event, KeyChanged) and event.was_verified:
        return _verified_key_changed(event)
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
    if isinstance(event, CodeRequested):
        name = display_safe(event.name)
        return (
            f"{name} ({short_id(event.fingerprint)}) asks to compare a code with you: "
            f"choose 6 and pick {name}."
        )
    if isinstance(event, VerificationEnded):
        return describe_ending(event.name, event.ending)
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


def format_history_row(row: StoredMessage, *, verified: bool = False) -> str:
    stamp = datetime.fromtimestamp(row.sent_at).strftime("%Y-%m-%d %H:%M:%S")
    mark = ", verified" if verified else ""
    peer = f"{display_safe(row.peer_name)} ({row.peer_host}:{row.peer_port}{mark})"
    arrow = f"You -> {peer}" if row.direction is Direction.OUT else f"{peer} -> You"
    state = row.state.value + (f": {row.detail}" if row.detail else "")
    return f"[{stamp}] {arrow} [{state}]: {display_safe(row.text)}"


def _parse_port(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= 65535 else None


@functools.lru_cache(maxsize=64)
def _ipv4(text: str) -> str | None:
    """`text` as an IPv4 address, if it is one. Remembered: option 1 parses what was
    typed twice, and a script sending many messages types the same address each time."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _looks_like_address(text: str) -> bool:
    return _ipv4(text) is not None or text == "localhost"


def _resolve_host(text: str) -> str | None:
    """An IPv4 address for what the user typed (an address or a host name)."""
    if (address := _ipv4(text)) is not None:
        return address
    try:
        return socket.gethostbyname(text)
    except (OSError, UnicodeError):
        return None
