"""Which typed recipients are addresses, and which addresses may be dialled."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerchat.policy.dialable import Form, classify, is_host_name, parse_address, refusal


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("2", Form.NUMBER),
        ("0", Form.NUMBER),
        ("0000012", Form.NUMBER),
        ("10.0.0.7", Form.ADDRESS),
        ("::1", Form.ADDRESS),
        ("[fe80::1]", Form.ADDRESS),
        ("1.2", Form.NOT_AN_ADDRESS),  # the C resolver: 1.0.0.2
        ("127.1", Form.NOT_AN_ADDRESS),  # 127.0.0.1
        ("0x7f000001", Form.NOT_AN_ADDRESS),  # 127.0.0.1
        ("0177.0.0.1", Form.NOT_AN_ADDRESS),  # octal
        ("10.0.0.256", Form.NOT_AN_ADDRESS),
        ("1.2.3.4.5", Form.NOT_AN_ADDRESS),
        ("Bob", Form.NAME),
        ("cafe", Form.NAME),
        ("bob-laptop.lan", Form.NAME),
        ("localhost", Form.NAME),
        ("Dr. Who", Form.NAME),
        ("²", Form.NAME),  # a digit to str.isdigit, not to int()
    ],
)
def test_classify(text: str, form: Form) -> None:
    assert classify(text) is form


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("localhost", True),
        ("bob-laptop.lan", True),
        ("bob-laptop.lan.", True),
        ("a" * 63 + ".lan", True),
        ("a" * 64 + ".lan", False),
        ("-bob.lan", False),
        ("bob_laptop", False),
        ("Dr. Who", False),
        ("1.2", False),
        ("host.0x10", False),
        ("", False),
    ],
)
def test_host_names(name: str, valid: bool) -> None:
    assert is_host_name(name) is valid


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("0.0.0.0", "0.0.0.0/8"),
        ("0.0.0.2", "0.0.0.0/8"),
        ("0.255.255.255", "0.0.0.0/8"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("192.168.1.255", "broadcast"),  # this host's directed broadcast, below
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("::ffff:0.0.0.2", "0.0.0.0/8"),
        ("::ffff:255.255.255.255", "broadcast"),
    ],
)
def test_addresses_that_reach_no_single_host_are_refused(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address), broadcasts={"192.168.1.255"})
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.7", "1.0.0.0", "192.168.1.254", "223.255.255.254", "::1"]
)
def test_host_addresses_may_be_dialled(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), broadcasts={"192.168.1.255"}) is None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_dotted_ipv4_address_is_an_address(value: int) -> None:
    text = str(ipaddress.IPv4Address(value))
    assert classify(text) is Form.ADDRESS
    assert parse_address(text) == ipaddress.IPv4Address(value)


@given(st.text(alphabet="0123456789.xXabcdefABCDEF", min_size=1, max_size=20))
def test_what_the_c_resolver_reads_as_a_number_is_never_a_name(text: str) -> None:
    """inet_aton is the resolver's own numeric parse: such text is never looked up by name."""
    try:
        socket.inet_aton(text)
    except OSError:
        return
    assert classify(text) is not Form.NAME
