"""Dropping files from the OS page cache, and counting how much of them is still cached.

For a cold-start figure the pages of a database must come from the disk, not
from memory. `drop_cached_pages` writes the files' dirty pages out (fsync),
asks the kernel to drop their clean pages (posix_fadvise DONTNEED, this file
only) and checks with mincore(2) that they are gone; if pages stay resident
and this process may write /proc/sys/vm/drop_caches (root), it drops the whole
page cache instead and checks again. It always says which way was used and
how many pages stayed resident, so a figure measured warm is never called
cold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DROP_CACHES = Path("/proc/sys/vm/drop_caches")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass(frozen=True)
class Dropped:
    method: str  # "posix_fadvise", "drop_caches", or "none" (the pages could not be dropped)
    pages: int  # pages of the files
    resident: int  # pages still in the page cache afterwards

    @property
    def cold(self) -> bool:
        return self.resident == 0

    def describe(self) -> str:
        if self.method == "none":
            return f"pages NOT dropped ({self.resident} of {self.pages} cached): warm"
        return f"dropped by {self.method}, {self.resident} of {self.pages} pages cached"


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages, pages in the page cache) of one file, from mincore(2) on a mapping of it."""
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            vector = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vector) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
            return pages, sum(byte & 1 for byte in vector)
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def _count(paths: Sequence[Path]) -> tuple[int, int]:
    found = [resident_pages(path) for path in paths if path.exists()]
    return sum(p for p, _ in found), sum(r for _, r in found)


def _fadvise(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # only clean pages can be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _drop_all() -> bool:
    """Drop the whole page cache (root only); False if this process may not."""
    os.sync()
    try:
        DROP_CACHES.write_text("1\n")
    except OSError:
        return False
    return True


def drop_cached_pages(paths: Sequence[Path]) -> Dropped:
    """Evict `paths` from the page cache as far as this process can; says how far it got."""
    _fadvise(paths)
    pages, resident = _count(paths)
    if resident == 0:
        return Dropped("posix_fadvise", pages, 0)
    if _drop_all():
        pages, resident = _count(paths)
        return Dropped("drop_caches", pages, resident)
    return Dropped("none", pages, resident)
