"""Small network tools that tests run inside their namespaces (`python -m tests.netns_tools`).

Each prints `READY` once its socket is open, one line per thing seen, and
stops at end of standard input or after its time limit. Only ever run inside a
namespace a test made: they send where they are told.

    capture IFACE SECONDS [WORD..] every UDP frame to or from port 5353 on IFACE, with
                                   the WORDs found in it
    join ADDR SECONDS              join 224.0.0.251 on the interface of ADDR (as avahi does)
    browse ADDR SECONDS            zeroconf's own browser for _peerchat._tcp on ADDR
    stock NAME PORT ADDR SECONDS   plain zeroconf announcing a service on ADDR only
    udp-listen PORT SECONDS        print each datagram; stop at one that reads END
    udp-send ADDR PORT TEXT [DEV]  one datagram (broadcast allowed), out of DEV if given
    tcp-listen PORT SECONDS        accept one connection
    tcp-connect ADDR PORT          connect once
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def until_stdin_closes_or(seconds: float) -> Callable[[], bool]:
    """A check that turns true when standard input ends or `seconds` have passed."""
    closed = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + seconds
    return lambda: closed.is_set() or time.monotonic() > deadline


def capture(iface: str, seconds: float, words: list[str]) -> None:
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    raw.bind((iface, 0))
    raw.settimeout(0.1)
    done = until_stdin_closes_or(seconds)
    say("READY")
    frames = 0
    while not done():
        try:
            frame = raw.recv(65535)
        except TimeoutError:
            continue
        frames += 1
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        header = (frame[14] & 0x0F) * 4
        source, target = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        sport, dport = struct.unpack(">HH", frame[14 + header : 14 + header + 4])
        if MDNS_PORT in (sport, dport):
            found = [w for w in words if w.encode() in frame]
            say(f"MDNS {source} {target} {sport} {dport} {' '.join(found)}".rstrip())
    say(f"DONE {frames}")


def join(address: str, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", MDNS_PORT))
    membership = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(address)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    done = until_stdin_closes_or(seconds)
    say("READY")
    while not done():
        time.sleep(0.05)


def browse(address: str, seconds: float) -> None:
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    seen: set[str] = set()

    def changed(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Added or name in seen:
            return
        seen.add(name)
        threading.Thread(target=resolve, args=(zeroconf, service_type, name), daemon=True).start()

    def resolve(zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is None:
            say(f"UNRESOLVED {name}")
            return
        props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        addresses = ",".join(info.parsed_addresses(IPVersion.V4Only))
        say(f"SERVICE {name}|{info.port}|{props.get('v')}|{props.get('fp')}|{addresses}")

    browser = ServiceBrowser(zc, "_peerchat._tcp.local.", handlers=[changed])
    done = until_stdin_closes_or(seconds)
    say("READY")
    while not done():
        time.sleep(0.05)
    browser.cancel()
    zc.close()


def stock(name: str, port: int, address: str, seconds: float) -> None:
    """zeroconf as it comes, on one interface: what the role hardens against."""
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = ServiceInfo(
        "_peerchat._tcp.local.",
        f"{name}._peerchat._tcp.local.",
        port=port,
        properties={"v": "1", "fp": "stock"},
        server=f"{name.lower()}-stock.local.",
        parsed_addresses=[address],
    )
    zc.register_service(info)
    done = until_stdin_closes_or(seconds)
    say("READY")
    while not done():
        time.sleep(0.05)
    zc.close()


def udp_listen(port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    sock.settimeout(0.1)
    done = until_stdin_closes_or(seconds)
    say("READY")
    while not done():
        try:
            data, (source, _) = sock.recvfrom(2048)
        except TimeoutError:
            continue
        text = data.decode(errors="replace")
        say(f"GOT {source} {text}")
        if text == "END":
            break


def udp_send(address: str, port: int, text: str, device: str | None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if device is not None:  # a limited broadcast needs an interface where no default route is
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    sock.sendto(text.encode(), (address, port))
    say("SENT")


def tcp_listen(port: int, seconds: float) -> None:
    server = socket.create_server(("", port))
    server.settimeout(seconds)
    say("READY")
    try:
        conn, (source, _) = server.accept()
    except TimeoutError:
        say("TIMEOUT")
        return
    say(f"ACCEPTED {source}")
    conn.close()


def tcp_connect(address: str, port: int) -> None:
    with socket.create_connection((address, port), timeout=5):
        say("CONNECTED")


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "capture":
        capture(args[0], float(args[1]), args[2:])
    elif command == "join":
        join(args[0], float(args[1]))
    elif command == "browse":
        browse(args[0], float(args[1]))
    elif command == "stock":
        stock(args[0], int(args[1]), args[2], float(args[3]))
    elif command == "udp-listen":
        udp_listen(int(args[0]), float(args[1]))
    elif command == "udp-send":
        udp_send(args[0], int(args[1]), args[2], args[3] if len(args) > 3 else None)
    elif command == "tcp-listen":
        tcp_listen(int(args[0]), float(args[1]))
    elif command == "tcp-connect":
        tcp_connect(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
