"""The log and the data folder are private to the user.

The log holds names, addresses and ID prefixes: it is created 0600 wherever
--log-file puts it, and so is every file it rotates into. An existing data
folder that other users can read is tightened to 0700 when it is a peer_chat
profile, and warned about when it holds other things too.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import peer_chat
from crypto_utils import KeyManager
from tests.support import free_tcp_port, run_cli


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common umask 022, under which open() creates files 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    yield
    for handler in root.handlers:
        if handler not in before:
            handler.close()
            root.removeHandler(handler)
    root.setLevel(level)


def test_the_log_and_its_rotations_are_created_0600(
    tmp_path: Path, loose_umask: None, root_handlers: None
) -> None:
    log = tmp_path / "elsewhere" / "chat.log"
    log.parent.mkdir()
    peer_chat._setup_logging(log, verbose=False)
    logging.getLogger("test").warning("a line with a name and an address")
    assert mode_of(log) == 0o600

    (handler,) = [
        h
        for h in logging.getLogger().handlers
        if getattr(h, "baseFilename", None) == str(log.absolute())
    ]
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    handler.doRollover()
    logging.getLogger("test").warning("after the rotation")
    assert mode_of(log) == 0o600
    assert mode_of(log.with_name("chat.log.1")) == 0o600


def test_an_existing_readable_log_is_tightened(
    tmp_path: Path, loose_umask: None, root_handlers: None
) -> None:
    log = tmp_path / "chat.log"
    log.write_text("from an earlier version\n")
    log.chmod(0o644)
    peer_chat._setup_logging(log, verbose=False)
    assert mode_of(log) == 0o600
    assert log.read_text().startswith("from an earlier version")


def test_a_readable_profile_folder_is_tightened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "Alice"
    profile.mkdir(mode=0o755)
    profile.chmod(0o755)
    (profile / "chat_history.db").touch()
    peer_chat.prepare_data_dir(profile)
    assert mode_of(profile) == 0o700
    assert "0755" in capsys.readouterr().err


def test_a_readable_folder_that_is_not_only_ours_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    (shared / "someone else's notes.txt").touch()
    peer_chat.prepare_data_dir(shared)
    assert mode_of(shared) == 0o775  # not ours to change
    err = capsys.readouterr().err
    assert "warning" in err and str(shared) in err and "other users" in err


def test_a_folder_that_cannot_be_tightened_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "Alice"
    profile.mkdir()
    profile.chmod(0o755)

    def refuse(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    peer_chat.prepare_data_dir(profile)
    err = capsys.readouterr().err
    assert "warning" in err and "other users" in err and "Operation not permitted" in err


def test_key_manager_tightens_its_folder_too(tmp_path: Path) -> None:
    profile = tmp_path / "Alice"
    profile.mkdir()
    profile.chmod(0o750)
    KeyManager(profile).load_or_create_sealer()
    assert mode_of(profile) == 0o700


def test_a_peer_started_with_a_log_file_elsewhere_keeps_it_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    log = tmp_path / "logs" / "peer.log"
    log.parent.mkdir()
    args = ["--name", "A", "--port", str(free_tcp_port()), "--no-discovery"]
    result = run_cli([*args, "--data-dir", str(data), "--log-file", str(log)], stdin="0\n")
    assert result.returncode == 0, result.stderr
    assert mode_of(log) == 0o600
    assert mode_of(data) == 0o700
    assert "A listening on port" in log.read_text()
