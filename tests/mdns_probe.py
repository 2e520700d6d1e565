"""A stand-alone mDNS role for tests: run it in a network namespace, read what it hears.

    python -m tests.mdns_probe --name Alice --port 5000 --broadcast 127.255.255.255

Prints one line per event, flushed: `READY <service name>`, `HINT <fingerprint>
<name> <host> <port>`, `GONE <fingerprint>`, and at the end `FOREIGN <n>` (datagrams
dropped for coming from off the link). Stops at end of standard input or after
--seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading

import ifaddr

from crypto_utils import fingerprint_of
from peerchat.net.mdns import MdnsGone, MdnsHint, MdnsRole, scope_for


def fingerprint_for(name: str) -> str:
    """A stable fingerprint-shaped ID for a test peer (no key needed to announce)."""
    return fingerprint_of(f"mdns probe {name}".encode())


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def report(event: MdnsHint | MdnsGone) -> None:
    if isinstance(event, MdnsHint):
        say(f"HINT {event.fingerprint} {event.name} {event.host} {event.port}")
    else:
        say(f"GONE {event.fingerprint}")


async def main(args: argparse.Namespace) -> int:
    scope = scope_for(args.broadcast, ifaddr.get_adapters())
    if scope is None:
        say("NOSCOPE")
        return 1
    role = MdnsRole(
        fingerprint=fingerprint_for(args.name),
        name=args.name,
        port=args.port,
        scope=scope,
        on_hint=report,
        refresh_interval=args.refresh,
    )
    if not await role.start():
        say("FAILED")
        return 1
    say(f"READY {role.service_name}")
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()

    def watch_stdin() -> None:  # a daemon thread: a read that never ends cannot block exit
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed.wait(), args.seconds)
    await role.close()
    say(f"FOREIGN {role.foreign_datagrams}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broadcast", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--refresh", type=float, default=60.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
