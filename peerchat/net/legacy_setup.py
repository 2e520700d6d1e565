"""From the legacy flags to the legacy side's settings (start-up only); the node owns the service.

`--legacy-port N` opens the legacy port; `--legacy-key FILE` adds the
original's shared-key format there and its beacons on the discovery port;
`--legacy-team NAME` is the team named in outgoing messages. Every wrong
value is a one-line UsageError or KeyFileError, as for every other flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from discovery import broadcast_targets
from peerchat.errors import KeyFileError, UsageError
from peerchat.legacy.original import LegacyKey, LegacyKeyError
from peerchat.limits import LEGACY_MAX_TEAM_CHARS
from peerchat.net.legacy_service import LegacyConfig


def check_legacy_flags(args: argparse.Namespace, name: str) -> str:
    """The team name for legacy messages ("" without --legacy-port); UsageError if wrong."""
    if args.legacy_port is None:
        if args.legacy_key is not None or args.legacy_team is not None:
            raise UsageError("--legacy-key and --legacy-team need --legacy-port")
        return ""
    if args.legacy_port == args.port:
        raise UsageError(
            "--legacy-port must differ from --port: the secure port never accepts legacy text"
        )
    team = name.replace(" ", "_") if args.legacy_team is None else args.legacy_team
    # One word: plain receivers split `IP:PORT TEAM MESSAGE` at spaces.
    if not 1 <= len(team) <= LEGACY_MAX_TEAM_CHARS or not team.isprintable():
        raise UsageError(
            f"invalid legacy team {team!r}: 1 to {LEGACY_MAX_TEAM_CHARS} printable characters"
        )
    if any(c.isspace() or c in "<>:@" for c in team):
        raise UsageError(f"invalid legacy team {team!r}: no spaces and none of < > : @")
    return team


def read_legacy_key(path: Path, data_dir: Path) -> LegacyKey:
    """The original's shared key from `path`; never this profile's own secret.key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"Cannot read legacy key {path}: {exc.strerror or exc}.") from None
    try:
        own = (data_dir / "secret.key").read_bytes()
    except OSError:
        own = None
    if own is not None and data.strip() == own.strip():
        raise UsageError(
            f"--legacy-key {path} is this profile's own secret.key, which must stay private; "
            "give the original program's shared secret.key"
        )
    try:
        return LegacyKey.from_file_content(data)
    except LegacyKeyError as exc:
        raise KeyFileError(f"Legacy key {path} is {exc}.") from None


def legacy_config(
    args: argparse.Namespace, *, name: str, team: str, data_dir: Path
) -> LegacyConfig:
    """The legacy side's settings from the flags (reads the key file, if one is given)."""
    key = None if args.legacy_key is None else read_legacy_key(args.legacy_key, data_dir)
    beacons = key is not None and not args.no_discovery
    return LegacyConfig(
        port=args.legacy_port,
        team=team,
        name=name,
        bind=args.bind,
        key=key,
        beacons=beacons,
        discovery_port=args.discovery_port,
        broadcast_targets=tuple(broadcast_targets(args.broadcast)) if beacons else (),
        beacon_interval=args.beacon_interval,
        beacon_timeout=args.peer_timeout,
    )
