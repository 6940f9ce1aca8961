"""The PostgreSQL fixture starts a real server that accepts the password in its URL and no other."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def test_the_server_listens_on_loopback(postgresql_url: str) -> None:
    parts = urlsplit(postgresql_url)
    assert parts.hostname == "127.0.0.1"
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as connection:
        # An SSLRequest: a real PostgreSQL server answers with one byte, 'S' or 'N'.
        connection.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        assert connection.recv(1) in {b"S", b"N"}
