"""A seed peer's address as the user types it: `--peer HOST:PORT`. Pure parsing, no lookups."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_HOST_NAME_MAX: Final = 253
_EXAMPLE: Final = "e.g. 192.168.1.20:5000 or alice-laptop.local:5000"


@dataclass(frozen=True, order=True)
class Seed:
    host: str  # as the user typed it: an IPv4 address or a host name
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_seed(text: str) -> Seed:
    """HOST:PORT as typed; ValueError with a one-line reason for anything else."""
    value = text.strip()
    host, colon, port_text = value.rpartition(":")
    if not colon or not host:
        raise ValueError(f"invalid seed peer {text!r}: expected HOST:PORT ({_EXAMPLE})")
    if ":" in host or host.startswith("["):
        raise ValueError(f"invalid seed peer {text!r}: IPv6 addresses are not supported")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"invalid seed peer {text!r}: the port must be a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid seed peer {text!r}: port {port} is not from 1 to 65535")
    if not is_ipv4(host) and not _is_host_name(host):
        raise ValueError(
            f"invalid seed peer {text!r}: {host!r} is not an IPv4 address or host name"
        )
    return Seed(host, port)


def is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _is_host_name(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > _HOST_NAME_MAX:
        return False
    labels = name.split(".")
    # All-numeric dotted names (999.1.1.1) are mistyped addresses, not names.
    return all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
