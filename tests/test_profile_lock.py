"""One profile, one process: the data folder's lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from peerchat.errors import PeerChatError
from peerchat.profile_lock import LOCK_FILE, ProfileInUseError, ProfileLock
from tests.support import ROOT

HOLDER = """
import sys, time
from pathlib import Path
from peerchat.profile_lock import ProfileLock
ProfileLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_lock_on_the_folder_is_refused_with_the_holder(tmp_path: Path) -> None:
    first = ProfileLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(ProfileInUseError) as refused:
            ProfileLock(tmp_path).acquire()
        message = str(refused.value)
        assert str(tmp_path) in message
        assert f"process {os.getpid()}" in message
        assert "\n" not in message
    finally:
        first.release()
    again = ProfileLock(tmp_path)
    again.acquire()  # released: free again
    again.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ProfileInUseError, match=f"process {holder.pid}"):
            ProfileLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)  # left behind
    lock = ProfileLock(tmp_path)
    lock.acquire()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()


def test_an_unreadable_pid_still_names_the_folder(tmp_path: Path) -> None:
    first = ProfileLock(tmp_path)
    first.acquire()
    try:
        (tmp_path / LOCK_FILE).write_text("garbage")
        with pytest.raises(ProfileInUseError, match="another process") as refused:
            ProfileLock(tmp_path).acquire()
        assert str(tmp_path) in str(refused.value)
    finally:
        first.release()


def test_a_folder_that_cannot_hold_the_lock_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).mkdir()  # a folder where the lock file should be
    with pytest.raises(PeerChatError, match="Cannot lock the data folder"):
        ProfileLock(tmp_path).acquire()
