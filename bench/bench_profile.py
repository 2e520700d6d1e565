"""Where a message's time goes: cProfile of both peers' network threads.

Peer A is a Node in this process, peer B a real `peer_chat.py` started through
bench/programs/profiled_peer.py (the same flags, a profiler in its network
thread). Both profilers use the thread's CPU time as their clock. Two paths
are profiled: sequential sends (latency) and one pipelined batch
(throughput); the reports go to bench/results/profile-latency.txt and
profile-throughput.txt (a --quick run writes them under bench/.cache/profiles/,
so that only a full run replaces the committed ones). The rows give the CPU
per message each profile saw (inflated by the profiler itself: compare the
profiles with each other only).

    python -m bench.bench_profile [--quick]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import RESULTS_DIR, Row, figure_row
from bench.peers import CACHE_DIR, STEP_TIMEOUT, local_peer, peer_process, peer_profile, program
from bench.registry import module_main


@dataclass(frozen=True)
class Sizes:
    sends: int  # sequential sends profiled
    pipelined: int  # messages of the pipelined batch profiled


QUICK_RESULTS_DIR = CACHE_DIR / "profiles"
FULL = Sizes(sends=2_000, pipelined=8_000)
QUICK = Sizes(sends=300, pipelined=3_000)


@dataclass(frozen=True)
class Profiled:
    label: str
    messages: int
    path: Path
    sender_us: float  # CPU per message of A's network thread, under the profiler
    receiver_us: float | None  # the same for B, when B wrote its profile


def _stats_text(stats: pstats.Stats, title: str) -> str:
    stream = io.StringIO()
    stream.write(f"==== {title}\n")
    stats.stream = stream  # type: ignore[attr-defined]
    stats.strip_dirs()
    stream.write("\n---- top 30 by cumulative time\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(30)
    stream.write("\n---- top 30 by own time (tottime)\n")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(30)
    return stream.getvalue()


def _total_seconds(stats: pstats.Stats) -> float:
    return float(stats.total_tt)  # type: ignore[attr-defined]


def profile_paths(sizes: Sizes, tmp: Path, results_dir: Path = RESULTS_DIR) -> list[Profiled]:
    """cProfile of A's and B's network threads on the latency and throughput paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    b_dir = peer_profile("B", tmp)
    written: list[Profiled] = []
    with local_peer("A", peer_profile("A", tmp)) as peer_a:
        work: list[tuple[str, str, int, Callable[[str], object]]] = [
            (
                "latency",
                f"{sizes.sends} sequential Node.send_to_peer calls",
                sizes.sends,
                lambda fp: peer_a.send_times(fp, count=sizes.sends, max_seconds=STEP_TIMEOUT * 3),
            ),
            (
                "throughput",
                f"Node.submit of {sizes.pipelined} messages, then wait_delivered",
                sizes.pipelined,
                lambda fp: peer_a.pipelined_rate(fp, count=sizes.pipelined),
            ),
        ]
        for label, what, messages, action in work:
            b_stats = tmp / f"b-{label}.prof"
            profiler = cProfile.Profile(time.thread_time)
            command = program("profiled_peer", b_stats)
            with peer_process("B", b_dir, command=command) as peer_b:
                fp = peer_a.connect(peer_b.address)
                peer_a.send_times(fp, count=20, max_seconds=STEP_TIMEOUT)  # warm
                peer_a.in_loop(profiler.enable)
                try:
                    action(fp)
                finally:
                    peer_a.in_loop(profiler.disable)
            sender = pstats.Stats(profiler)
            parts = [
                f"peer_chat bench profile: {label} path, {what}.\n"
                "cProfile with the thread's CPU time as its clock (time.thread_time), so\n"
                "time spent waiting for the other peer is not counted; the profiler's own\n"
                "overhead is, so compare the entries with each other only.\n",
                _stats_text(sender, "sender: peer A's network thread (in-process Node)"),
            ]
            receiver_us = None
            if b_stats.exists():
                receiver = pstats.Stats(str(b_stats))
                receiver_us = _total_seconds(receiver) * 1e6 / messages
                parts.append(
                    _stats_text(
                        receiver, "receiver: peer B's network thread (peer_chat.py process)"
                    )
                )
            else:
                parts.append("==== receiver: no profile was written by peer B\n")
            path = results_dir / f"profile-{label}.txt"
            path.write_text("\n".join(parts))
            written.append(
                Profiled(
                    label, messages, path, _total_seconds(sender) * 1e6 / messages, receiver_us
                )
            )
    return written


def profile_rows(profiles: list[Profiled]) -> list[Row]:
    return [
        figure_row(
            f"profiled {p.label} path ({p.messages:,} messages, {p.path.name}): "
            f"CPU per message under the profiler, A's network thread (baseline: B's)",
            p.sender_us,
            "us",
            baseline=p.receiver_us,
            baseline_unit="us" if p.receiver_us is not None else None,
        )
        for p in profiles
    ]


def run(quick: bool, *, sizes: Sizes | None = None, results_dir: Path | None = None) -> list[Row]:
    sizes = sizes or (QUICK if quick else FULL)
    results_dir = results_dir or (QUICK_RESULTS_DIR if quick else RESULTS_DIR)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        profiles = profile_paths(sizes, Path(tmp), results_dir)
    for profiled in profiles:
        print(f"bench: profile written to {profiled.path}", file=sys.stderr)
    return profile_rows(profiles)


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__ or "profiles", argv, entry="profile")


if __name__ == "__main__":
    sys.exit(main())
