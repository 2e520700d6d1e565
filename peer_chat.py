"""peer_chat: serverless, end-to-end encrypted chat for peers on the same network.

    python peer_chat.py --name Alice --port 5000

This module is the thin command line: it parses flags, opens the peer's
profile (keys and history), starts the network node and hands over to the
menu. Every failure a user can cause ends here as one clear line and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import logging
import logging.handlers
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

from peerchat import limits
from peerchat.errors import PeerChatError, UsageError
from peerchat.policy.seed_address import Seed, parse_seed

__version__ = "1.0.0"

PROG = "peer_chat"
LOG_MAX_BYTES = 5 * 1024 * 1024  # per log file; the log keeps LOG_BACKUPS older files
LOG_BACKUPS = 2
PASSPHRASE_ENV = "PEER_CHAT_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a wrong flag as one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: expected a number from 1 to 65535"
        ) from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: expected 1 to 65535")
    return value


def _number_between(what: str, low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of `what` from `low` to `high` (NaN and infinity refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: expected a number"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {value:g}: expected {low:g} to {high:g}"
            )
        return value

    return parse


_seconds = _number_between("duration", 0.05, 86400)
_days = _number_between("number of days", 0.001, limits.MAX_QUEUE_DAYS)


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected 1 to 1000000")
    return int(text)


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
}


def _file_size(text: str) -> int:
    """A size in bytes: a whole number, or a number with kB/MB/GB/TB or KiB/MiB/GiB/TiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: expected bytes, or a number with kB, MB, GB, TB, "
            "KiB, MiB, GiB or TiB"
        )
    value = int(Fraction(match.group(1)) * unit)
    if not 1 <= value <= limits.MAX_TRANSFER_SIZE:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: expected 1 byte to {limits.MAX_TRANSFER_SIZE} bytes"
        )
    return value


def _ipv4(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IPv4 address {text!r}") from None


def _seed(text: str) -> Seed:
    try:
        return parse_seed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        allow_abbrev=False,  # a mistyped flag is an error, never some other flag
        description="Serverless, end-to-end encrypted chat for peers on the same network.",
        epilog=(
            f"A passphrase for the key files is read from --passphrase-file or from "
            f"${PASSPHRASE_ENV}, never from the command line."
        ),
    )
    parser.add_argument("--name", required=True, help="your name as other peers see it")
    parser.add_argument("--port", required=True, type=_port, help="TCP port to listen on")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="profile folder: keys, history, peers file (default: a per-user folder for NAME)",
    )
    parser.add_argument(
        "--bind", type=_ipv4, default="0.0.0.0", help="TCP listen address (default: all)"
    )
    parser.add_argument(
        "--broadcast",
        type=_ipv4,
        default=limits.LIMITED_BROADCAST,
        help=f"discovery broadcast address (default: {limits.LIMITED_BROADCAST} "
        "and each interface's)",
    )
    parser.add_argument(
        "--discovery-port",
        type=_port,
        default=limits.DISCOVERY_PORT,
        help=f"UDP discovery port (default: {limits.DISCOVERY_PORT})",
    )
    parser.add_argument(
        "--beacon-interval",
        type=_seconds,
        default=limits.BEACON_INTERVAL,
        help=f"seconds between discovery beacons (default: {limits.BEACON_INTERVAL:g})",
    )
    parser.add_argument(
        "--peer-timeout",
        type=_seconds,
        default=limits.PEER_TIMEOUT,
        help=f"seconds of silence before a peer is offline (default: {limits.PEER_TIMEOUT:g})",
    )
    parser.add_argument(
        "--no-discovery",
        action="store_true",
        help="no beacons and no mDNS: peers reach us by address only",
    )
    parser.add_argument(
        "--peer",
        action="append",
        type=_seed,
        default=[],
        metavar="HOST:PORT",
        help="a peer to connect to at start and keep trying while it is away (repeatable); "
        "remembered in the profile once reached",
    )
    parser.add_argument(
        "--no-peer-exchange",
        action="store_true",
        help="do not tell connected peers about each other, nor listen to what they tell",
    )
    parser.add_argument(
        "--no-mdns", action="store_true", help="no mDNS / DNS-SD announcements or browsing"
    )
    parser.add_argument(
        "--queue-limit",
        type=_count,
        default=limits.MAX_QUEUED_PER_PEER,
        help=f"undelivered messages kept for one peer (default: {limits.MAX_QUEUED_PER_PEER:,})",
    )
    parser.add_argument(
        "--queue-days",
        type=_days,
        default=limits.MAX_QUEUED_AGE / 86400,
        help="days a queued message may wait before it is marked failed (default: 7)",
    )
    parser.add_argument(
        "--legacy-port",
        type=_port,
        help="also listen on this TCP port for the original chat.py and other plain-text "
        "programs (unencrypted, unverified; off by default)",
    )
    parser.add_argument(
        "--legacy-key",
        type=Path,
        metavar="FILE",
        help="the original's shared secret.key: speak its format and beacons on the legacy port",
    )
    parser.add_argument(
        "--legacy-team",
        metavar="NAME",
        help="team name in outgoing legacy messages (default: --name, spaces as _)",
    )
    parser.add_argument(
        "--quota-messages",
        type=_count,
        default=limits.QUOTA_MESSAGES_PER_HOUR,
        help="messages one peer may have stored here per hour; ten times as many for a "
        f"verified peer (default: {limits.QUOTA_MESSAGES_PER_HOUR:,})",
    )
    parser.add_argument(
        "--quota-mb",
        type=_count,
        default=limits.QUOTA_BYTES_PER_HOUR // (1024 * 1024),
        help="MiB of text one peer may have stored here per hour; ten times as much for a "
        f"verified peer (default: {limits.QUOTA_BYTES_PER_HOUR // (1024 * 1024)})",
    )
    parser.add_argument(
        "--downloads",
        type=Path,
        help="folder for files received (default: a downloads folder in the profile)",
    )
    parser.add_argument(
        "--max-file-size",
        type=_file_size,
        default=limits.MAX_FILE_SIZE,
        metavar="SIZE",
        help="largest file accepted from a peer, e.g. 500MB or 2GiB (default: 4GiB)",
    )
    parser.add_argument("--passphrase-file", type=Path, help="file holding the key passphrase")
    parser.add_argument("--log-file", type=Path, help="log file (default: DATA_DIR/peer_chat.log)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def default_data_dir(name: str, environ: os._Environ[str] | dict[str, str]) -> Path:
    """A per-user folder for this name, so two names never share a profile."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    folder = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return Path(base) / "peer_chat" / folder


def prepare_data_dir(path: Path) -> Path:
    """Create the profile folder (private to the user) and prove it is writable."""
    from crypto_utils import make_private_dir

    try:
        warning = make_private_dir(path)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PeerChatError(f"Data folder {path} is not writable: {reason.lower()}.") from None
    if warning is not None:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return path


class _QuietFileHandler(logging.handlers.RotatingFileHandler):
    """The log: bounded on disk (a flood of hostile connections logs a line each),
    and silent when it cannot be written (a full disk) so the menu's terminal stays clean."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def _open(self) -> io.TextIOWrapper:
        # The log holds names, addresses and ID prefixes: 0600 from the start, at each
        # rotation too, and an older log file left readable by others is tightened.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
                os.fchmod(fd, 0o600)
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


def _setup_logging(log_file: Path, verbose: bool) -> None:
    try:
        handler = _QuietFileHandler(
            log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        raise PeerChatError(f"Cannot open log file {log_file}: {exc.strerror or exc}.") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported after parsing so that --help and a wrong flag answer at once.
    from crypto_utils import KeyManager, read_passphrase
    from peerchat.net.file_store import Downloads, FileStoreError
    from peerchat.net.legacy_setup import check_legacy_flags, legacy_config
    from peerchat.net.node import Node, NodeConfig
    from peerchat.net.seeds import SeedLookupError, SeedStore, resolve_seeds
    from peerchat.net.transfers import TransferSettings
    from peerchat.policy.sanitize import validate_name
    from peerchat.profile_lock import ProfileLock
    from peerchat.ui.menu import Menu
    from storage import HistoryStore

    try:
        name = validate_name(args.name)
    except ValueError as exc:
        raise UsageError(f"invalid name {args.name!r}: {exc}") from None
    team = check_legacy_flags(args, name)
    if len(args.peer) > limits.MAX_SEEDS:
        raise UsageError(f"too many --peer flags: at most {limits.MAX_SEEDS} seed peers")
    try:
        # Checked before anything is opened: a seed that cannot be found is a typo to fix now.
        given_seeds = resolve_seeds(args.peer)
    except SeedLookupError as exc:
        raise UsageError(str(exc)) from None
    data_dir = prepare_data_dir(args.data_dir or default_data_dir(name, os.environ))
    # Before anything in the folder is opened: keys, history and log are this run's alone.
    ProfileLock(data_dir).acquire()  # held until the process ends, however it ends
    _setup_logging(args.log_file or data_dir / "peer_chat.log", args.verbose)
    passphrase = read_passphrase(args.passphrase_file, os.environ)
    keys = KeyManager(data_dir, passphrase)
    identity = keys.load_or_create_identity()
    sealer = keys.load_or_create_sealer()
    legacy = (
        None
        if args.legacy_port is None
        else legacy_config(args, name=name, team=team, data_dir=data_dir)
    )
    try:
        downloads = Downloads(args.downloads or data_dir / "downloads").prepare()
    except FileStoreError as exc:
        raise PeerChatError(f"{exc}.") from None
    transfers = TransferSettings(downloads=downloads, max_file_size=args.max_file_size)
    store = HistoryStore.open(data_dir / "chat_history.db", sealer)
    config = NodeConfig(
        name=name,
        port=args.port,
        data_dir=data_dir,
        bind=args.bind,
        broadcast=args.broadcast,
        discovery_port=args.discovery_port,
        beacon_interval=args.beacon_interval,
        peer_timeout=args.peer_timeout,
        discovery=not args.no_discovery,
        peer_exchange=not args.no_peer_exchange,
        mdns=not (args.no_mdns or args.no_discovery),
        max_queued_per_peer=args.queue_limit,
        max_queued_age=args.queue_days * 86400,
        legacy=legacy,
        quota_messages_per_hour=args.quota_messages,
        quota_bytes_per_hour=args.quota_mb * 1024 * 1024,
        transfers=transfers,
    )
    seeds = SeedStore(data_dir / "seeds.json", given=given_seeds)
    menu = Menu(store=store, identity=identity, data_dir=data_dir, seeds=seeds)
    node = Node(config, identity, store, menu.show_event, seeds)
    menu.verifier = node.verifier
    menu.legacy = node.legacy
    try:
        node.start()
    except BaseException:
        store.close()
        raise
    log = logging.getLogger(__name__)
    log.info("%s listening on port %d", name, args.port)
    log.info(
        "files received go to %s (at most %d bytes each)",
        transfers.downloads,
        transfers.max_file_size,
    )
    try:
        menu.run(node, port=args.port)
    finally:
        node.close()
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except PeerChatError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
