"""peer_chat with cProfile in its network thread: `profiled_peer.py STATS_PATH <peer_chat flags>`.

The profiler's clock is the thread's CPU time, so time spent waiting is not
counted. It runs in the thread the node names "peer-net" only, and its stats
are written to STATS_PATH when that thread ends.
"""

from __future__ import annotations

import cProfile
import sys
import threading
import time

import peer_chat

NETWORK_THREAD = "peer-net"

_profiler = cProfile.Profile(time.thread_time)
_thread_run = threading.Thread.run


def _run(self: threading.Thread) -> None:
    if self.name != NETWORK_THREAD:
        _thread_run(self)
        return
    _profiler.enable()
    try:
        _thread_run(self)
    finally:
        _profiler.disable()
        _profiler.dump_stats(sys.argv[1])


if __name__ == "__main__":
    threading.Thread.run = _run  # type: ignore[method-assign]
    sys.exit(peer_chat.main(sys.argv[2:]))
