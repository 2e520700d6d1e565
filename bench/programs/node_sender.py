"""A Node that sends on command: `node_sender.py DATA_DIR NAME HOST PORT TEXT_BYTES`.

Built as peer_chat builds one (bench.peers.LocalPeer), it connects to
HOST:PORT and prints "ready". Each line "N" on standard input then makes it
send N messages of TEXT_BYTES bytes one after the other, each through
Node.send_to_peer, which returns once the receiver has acknowledged the
message; it prints "done SECONDS" after the last. End of input closes it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.peers import local_peer


def main(data_dir: Path, name: str, host: str, port: int, size: int) -> None:
    text = ("n" * size)[:size]
    with local_peer(name, data_dir) as peer:
        fp = peer.connect((host, port))
        print("ready", flush=True)
        for line in sys.stdin:
            count = int(line)
            start = time.perf_counter()
            peer.send_times(fp, count=count, max_seconds=3600.0, text=text)
            print(f"done {time.perf_counter() - start:.6f}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
