"""What a typed recipient is, and which addresses may be dialled: pure rules.

The C resolver reads far more than dotted quads as addresses: `2` is
0.0.0.2, `1.2` is 1.0.0.2, `0x7f000001` is 127.0.0.1. A peer_chat user types
a number from option 2, a peer's name, or an address, so only the two
unambiguous address forms (a dotted IPv4 address, an IPv6 address) are read
as addresses, and a host name is only what RFC 1123 calls one with a last
label that cannot be a number. What is left that the resolver would still
read as a number is refused, never looked up.

An address that reaches no single host (this network 0.0.0.0/8, multicast,
broadcast) is refused whether it was typed or a host name resolved to it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Collection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
_NUMERIC_FORM = re.compile(r"^[0-9A-Fa-fxX.]+$")


class Form(enum.Enum):
    """What a recipient answer is, which decides the questions that follow it."""

    NUMBER = "number"  # a row of option 2
    ADDRESS = "address"  # an IP address: its port is asked, as in the original
    NOT_AN_ADDRESS = "not an address"  # what the C resolver alone reads as one
    NAME = "name"  # a peer's name, or else maybe a host name


def classify(text: str) -> Form:
    if text.isascii() and text.isdigit():
        return Form.NUMBER
    if parse_address(text) is not None:
        return Form.ADDRESS
    if _NUMERIC_FORM.match(text) and any(c.isdigit() for c in text) and not is_host_name(text):
        return Form.NOT_AN_ADDRESS
    return Form.NAME


def parse_address(text: str) -> IPAddress | None:
    """A dotted IPv4 address or an IPv6 address (optionally in brackets); None otherwise."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_host_name(text: str) -> bool:
    """RFC 1123 letters-digits-hyphens labels, the last of which is not a number."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    return not _NUMERIC_LABEL.match(labels[-1])


def refusal(address: IPAddress, broadcasts: Collection[str] = ()) -> str | None:
    """Why `address` is not a peer's, or None if it may be dialled.

    `broadcasts` are this host's directed broadcast addresses.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast:
        return "it is a multicast address, not a peer's"
    if isinstance(address, ipaddress.IPv4Address):
        if address in _THIS_NETWORK:
            return "addresses in 0.0.0.0/8 reach no host"
        if address == _LIMITED_BROADCAST or str(address) in broadcasts:
            return "it is a broadcast address, not a peer's"
    elif address.is_unspecified:
        return "the unspecified address reaches no host"
    return None
