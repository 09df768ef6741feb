"""Which address a request comes from behind reverse proxies: only trusted hops of X-Forwarded-For count."""

from __future__ import annotations

import pytest

from bot_core.config import ConfigError, parse_config
from bot_core.proxies import client_address, parse_networks

TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # not from a proxy: the header is the client's own
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy that names no one
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),  # what the client wrote is ignored
        ("127.0.0.1", ["203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # two proxies in a row
        ("127.0.0.1", ["203.0.113.7", "10.1.2.3"], "203.0.113.7"),  # ... as two headers
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),  # only proxies: the farthest one
        ("127.0.0.1", ["garbage, 203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["203.0.113.7, garbage"], "127.0.0.1"),  # a hop the proxy did not write: stop there
        ("127.0.0.1", ["203.0.113.7:4711"], "203.0.113.7"),
        ("127.0.0.1", ["[2001:db8::1]:4711"], "2001:db8::1"),
        ("fd00::5", ["2001:db8::1"], "2001:db8::1"),
        ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # IPv4 seen on a dual-stack socket
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(
    peer: str, headers: list[str], client: str
) -> None:
    assert client_address(peer, headers, TRUSTED) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", ["203.0.113.7"], ()) == "127.0.0.1"


def test_a_trusted_proxy_that_is_not_an_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config('server: {trusted_proxies: ["10.0.0.0/8", "proxy.local"]}\n', "plugins.yaml", environ={})
    assert "'proxy.local' is not an IP address or a CIDR network" in str(error.value)
    config = parse_config('server: {trusted_proxies: ["10.0.0.0/8", "::1"]}\n', "plugins.yaml", environ={})
    assert config.server.trusted_proxies == ["10.0.0.0/8", "::1"]
