"""The mDNS / DNS-SD role: announce this peer as `_peerchat._tcp.local.` and browse for others.

It uses python-zeroconf's asyncio API in the node's loop. What it learns is a
hint (fingerprint, name, address, port) passed to a callback; the address
book and a handshake decide what it is worth. Standard tools see the peers
(`avahi-browse -rt _peerchat._tcp`): the instance name is the peer's name and
short ID, the TXT record holds the protocol version (`v`) and the full
fingerprint (`fp`), the SRV record the TCP port.

It runs on the interfaces broadcast discovery uses and on no other
(`scope_for`): with `--broadcast 127.255.255.255`, loopback only. zeroconf
sends only through the interfaces it is given, but its receiving socket is
bound to the wildcard address, and on Linux such a socket also gets the
multicast of groups *other* sockets of the host joined (IP_MULTICAST_ALL), such
as avahi's on the LAN interface; a query from there would then be answered by
unicast through the LAN. So every zeroconf socket gets IP_MULTICAST_ALL off,
and datagrams whose source is not on one of the chosen networks are dropped
before zeroconf sees them (mDNS is link-local: RFC 6762, section 11).

Bounded: at most MDNS_MAX_SERVICES instances tracked, one resolution at a
time, at most MDNS_HINTS_PER_SECOND hints reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from crypto_utils import is_fingerprint, short_id
from peerchat.limits import (
    LIMITED_BROADCAST,
    MDNS_HINTS_PER_SECOND,
    MDNS_MAX_SERVICES,
    PROTOCOL_VERSION,
)
from peerchat.protocol.beacon import TokenBucket, name_problem

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_peerchat._tcp.local."
RESOLVE_TIMEOUT_MS: Final = 3000
REFRESH_INTERVAL: Final = 60.0  # seconds between re-reports of the services still there
MAX_ADDRESSES: Final = 4  # per service
CLOSE_TIMEOUT: Final = 2.0
_LABEL_MAX: Final = 63  # bytes of one DNS label
_IP_MULTICAST_ALL: Final = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux


@dataclass(frozen=True)
class MdnsHint:
    fingerprint: str  # from the TXT record: a claim, like everything here
    name: str | None  # from the instance name; None when it is not a valid peer name
    host: str
    port: int


@dataclass(frozen=True)
class MdnsGone:
    fingerprint: str  # its service said goodbye (or expired)


@dataclass(frozen=True)
class MdnsScope:
    interfaces: tuple[str, ...]  # IPv4 addresses zeroconf binds and sends through
    networks: tuple[ipaddress.IPv4Network, ...]  # where datagrams and hints may come from


LOOPBACK_SCOPE: Final = MdnsScope(("127.0.0.1",), (ipaddress.IPv4Network("127.0.0.0/8"),))


def scope_for(broadcast: str, adapters: Iterable[Any]) -> MdnsScope | None:
    """The interfaces mDNS may use, given the `--broadcast` address and ifaddr's adapters.

    The limited broadcast (the default): every interface broadcast discovery
    reaches (IPv4, not loopback, /30 or wider). A loopback address: loopback
    only. Any other address: the interfaces whose network holds it. None if
    no interface qualifies.
    """
    target = ipaddress.IPv4Address(broadcast)
    if target.is_loopback:
        return LOOPBACK_SCOPE
    interfaces: list[str] = []
    networks: list[ipaddress.IPv4Network] = []
    for adapter in adapters:
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6
            try:
                net = ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            except ValueError:
                continue
            if net.is_loopback or net.prefixlen >= 31:
                continue
            if broadcast == LIMITED_BROADCAST or target in net:
                if ip.ip not in interfaces:
                    interfaces.append(ip.ip)
                if net not in networks:
                    networks.append(net)
    if not interfaces:
        return None
    return MdnsScope(tuple(interfaces), tuple(networks))


def instance_name(name: str, fingerprint: str) -> str:
    """ "NAME SHORTID", within one DNS label; a dot would split the label, so it becomes "-"."""
    suffix = f" {short_id(fingerprint)}"
    room = _LABEL_MAX - len(suffix.encode())
    safe = name.replace(".", "-")
    while len(safe.encode()) > room:
        safe = safe[:-1]
    return safe + suffix


def parse_instance(instance: str, fingerprint: str) -> str | None:
    """The peer name in an instance label, if it ends in the short ID of `fingerprint`."""
    name, _, sid = instance.rpartition(" ")
    if sid != short_id(fingerprint) or not name or name_problem(name) is not None:
        return None
    return name


class _SameLinkOnly(asyncio.DatagramProtocol):
    """Passes on datagrams from the chosen networks only (mDNS is link-local)."""

    def __init__(self, inner: Any, networks: tuple[ipaddress.IPv4Network, ...]) -> None:
        self._inner = inner
        self._networks = networks
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def error_received(self, exc: Exception) -> None:
        self._inner.error_received(exc)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            source = ipaddress.IPv4Address(str(addr[0]))
        except ValueError:
            self.dropped += 1
            return
        if any(source in net for net in self._networks):
            self._inner.datagram_received(data, addr)
        else:
            self.dropped += 1


class MdnsRole:
    """Announces this peer and reports the others it hears of; runs in the node's loop."""

    def __init__(
        self,
        *,
        fingerprint: str,
        name: str,
        port: int,
        scope: MdnsScope,
        on_hint: Callable[[MdnsHint | MdnsGone], None],
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self._fingerprint = fingerprint
        self._name = name
        self._port = port
        self._scope = scope
        self._on_hint = on_hint
        self._refresh_interval = refresh_interval
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._filters: list[_SameLinkOnly] = []
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._known: dict[str, list[MdnsHint]] = {}  # service name -> what it said
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bucket = TokenBucket(MDNS_HINTS_PER_SECOND, MDNS_HINTS_PER_SECOND, time.monotonic())
        self._closed = False
        self.dropped: dict[str, int] = {}

    @property
    def service_name(self) -> str:
        return f"{instance_name(self._name, self._fingerprint)}.{SERVICE_TYPE}"

    @property
    def foreign_datagrams(self) -> int:
        """Datagrams from outside the chosen networks, dropped before zeroconf saw them."""
        return sum(f.dropped for f in self._filters)

    async def start(self) -> bool:
        """Open the sockets, announce, browse. False (and a log line) if mDNS cannot run here."""
        try:
            zc = AsyncZeroconf(interfaces=list(self._scope.interfaces), ip_version=IPVersion.V4Only)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("mDNS is not available: %s", exc)
            return False
        self._zc = zc
        try:
            await zc.zeroconf.async_wait_for_start()
            self._keep_to_the_link(zc.zeroconf)
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.service_name,
                port=self._port,
                properties={"v": str(PROTOCOL_VERSION), "fp": self._fingerprint},
                server=f"peerchat-{short_id(self._fingerprint).lower()}.local.",
                parsed_addresses=list(self._scope.interfaces),
            )
            registered = await zc.async_register_service(self._info, allow_name_change=True)
            self._tasks.append(asyncio.ensure_future(self._registered(registered)))
            self._browser = AsyncServiceBrowser(
                zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
            )
        except Exception as exc:
            log.warning("mDNS could not start: %s", exc)
            await self.close()
            return False
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._resolve_loop()))
        self._tasks.append(loop.create_task(self._refresh_loop()))
        log.info("mDNS on %s as %r", ", ".join(self._scope.interfaces), self.service_name)
        return True

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        zc, self._zc = self._zc, None
        if zc is None:
            return
        with contextlib.suppress(Exception):
            if self._browser is not None:
                await self._browser.async_cancel()
        try:
            # Unregistering sends the goodbyes, so others drop us at once.
            await asyncio.wait_for(zc.async_close(), CLOSE_TIMEOUT)
        except Exception as exc:
            log.debug("mDNS close: %s", exc)

    # -- internals ------------------------------------------------------------------

    def _keep_to_the_link(self, zc: Zeroconf) -> None:
        for reader in zc.engine.readers:
            if sys.platform.startswith("linux"):
                with contextlib.suppress(OSError):
                    reader.sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            transport = reader.transport
            guard = _SameLinkOnly(transport.get_protocol(), self._scope.networks)
            transport.set_protocol(guard)
            self._filters.append(guard)

    async def _registered(self, registered: Any) -> None:
        try:
            await registered
        except Exception as exc:
            log.warning("mDNS announcement failed: %s", exc)

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if self._closed or name == (self._info.name if self._info else None):
            return
        if state_change is ServiceStateChange.Removed:
            self._forget(name)
            return
        if name in self._queued:
            return
        if len(self._known) + len(self._queued) >= MDNS_MAX_SERVICES and name not in self._known:
            self._drop("too many services")
            return
        self._queued.add(name)
        self._queue.append(name)
        self._wake.set()

    def _forget(self, name: str) -> None:
        hints = self._known.pop(name, None)
        if hints:
            self._report(MdnsGone(hints[0].fingerprint))

    async def _resolve_loop(self) -> None:
        while not self._closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            name = self._queue.popleft()
            self._queued.discard(name)
            try:
                hints = await self._resolve(name)
            except Exception:
                log.exception("mDNS: resolving %r failed", name)
                continue
            if hints:
                self._known[name] = hints
                for hint in hints:
                    self._report(hint)

    async def _resolve(self, name: str) -> list[MdnsHint]:
        zc = self._zc
        if zc is None or not name.endswith("." + SERVICE_TYPE):
            return []
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
            self._drop("unresolved")
            return []
        return self._hints_from(name, info)

    def _hints_from(self, name: str, info: AsyncServiceInfo) -> list[MdnsHint]:
        props = info.properties
        version, fp_raw = props.get(b"v"), props.get(b"fp")
        if version != str(PROTOCOL_VERSION).encode():
            self._drop("other version")
            return []
        fingerprint = fp_raw.decode("ascii", "replace") if fp_raw else ""
        if not is_fingerprint(fingerprint):
            self._drop("bad fingerprint")
            return []
        if fingerprint == self._fingerprint:
            return []  # ourselves (another process with this profile, or our own echo)
        port = info.port
        if port is None or not 1 <= port <= 65535:
            self._drop("bad port")
            return []
        instance = name[: -len(SERVICE_TYPE) - 1]
        peer_name = parse_instance(instance, fingerprint)
        hints: list[MdnsHint] = []
        for address in info.parsed_addresses(IPVersion.V4Only):
            if not self._on_link(address):
                self._drop("address off the link")
                continue
            hints.append(MdnsHint(fingerprint, peer_name, address, port))
            if len(hints) >= MAX_ADDRESSES:
                break
        return hints

    def _on_link(self, address: str) -> bool:
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._scope.networks)

    async def _refresh_loop(self) -> None:
        # Services stay until they say goodbye or expire; saying so now and then
        # keeps their claims fresh in the address book.
        while not self._closed:
            await asyncio.sleep(self._refresh_interval)
            for hints in list(self._known.values()):
                for hint in hints:
                    self._report(hint)

    def _report(self, hint: MdnsHint | MdnsGone) -> None:
        if isinstance(hint, MdnsHint):
            self._bucket.refill(time.monotonic())
            if self._bucket.tokens < 1:
                self._drop("rate limited")
                return
            self._bucket.tokens -= 1
        try:
            self._on_hint(hint)
        except Exception:
            log.exception("mDNS hint callback failed")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
