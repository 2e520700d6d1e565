"""The original's beacons: the discovery port they need, said plainly when it is taken."""

from __future__ import annotations

import socket

import pytest
from cryptography.fernet import Fernet

from peerchat.errors import BindError
from peerchat.legacy.original import LegacyKey
from peerchat.net.legacy_beacons import LegacyBeacons


def test_a_taken_discovery_port_is_one_clear_bind_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hog:
        hog.bind(("", 0))  # no SO_REUSEADDR/SO_REUSEPORT: nobody may share it
        port = hog.getsockname()[1]
        beacons = LegacyBeacons(
            key=LegacyKey(Fernet.generate_key()),
            name="Alice",
            port=5001,
            targets=["127.255.255.255"],
            discovery_port=port,
            interval=5.0,
            on_beacon=lambda _host, _beacon: None,
        )
        with pytest.raises(
            BindError, match=f"^Discovery port {port} is unavailable for the original's beacons: .+"
        ):
            beacons.bind()
        beacons.close()
