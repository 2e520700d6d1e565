"""--downloads and --max-file-size: parsed strictly, and a bad folder is one line at start."""

from __future__ import annotations

from pathlib import Path

import pytest

import peer_chat
from peerchat import limits
from peerchat.errors import UsageError
from tests.support import free_tcp_port, run_cli


def parse(*extra: str) -> object:
    return peer_chat.build_parser().parse_args(["--name", "A", "--port", "5000", *extra])


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("500MB", 500_000_000),
        ("500 mb", 500_000_000),
        ("2GiB", 2 * 1024**3),
        ("1.5G", 3 * 1024**3 // 2),
        ("64k", 65536),
        ("1TB", 10**12),
    ],
)
def test_max_file_size_units(text: str, size: int) -> None:
    assert parse("--max-file-size", text).max_file_size == size  # type: ignore[attr-defined]


def test_defaults() -> None:
    args = parse()
    assert args.max_file_size == limits.MAX_FILE_SIZE == 4 * 1024**3  # type: ignore[attr-defined]
    assert args.downloads is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text", ["0", "-5", "big", "5 parsecs", "1e9", "9" * 400, "0.1", "", "10 GB GB"]
)
def test_bad_sizes_are_one_line(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size"):
        parse("--max-file-size", text)


@pytest.mark.slow
def test_a_downloads_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli(
        [
            "--name",
            "A",
            "--port",
            str(free_tcp_port()),
            "--data-dir",
            str(tmp_path / "d"),
            "--downloads",
            str(blocker / "downloads"),
            "--no-discovery",
        ]
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "cannot create downloads folder" in line and str(blocker) in line


@pytest.mark.slow
def test_the_default_downloads_folder_is_in_the_profile(tmp_path: Path) -> None:
    result = run_cli(
        [
            "--name",
            "A",
            "--port",
            str(free_tcp_port()),
            "--data-dir",
            str(tmp_path / "d"),
            "--no-discovery",
        ],
        stdin="0\n",
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "d" / "downloads"
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
