"""Who the client is behind proxies: only trusted peers are believed, read from the right."""

from __future__ import annotations

import pytest

from sse.protocol.forwarded import client_address, is_trusted, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.2"])
PROXY = "10.1.2.3"


def test_an_untrusted_peer_is_the_client_whatever_its_headers_say() -> None:
    headers = {"x-forwarded-for": "203.0.113.5", "forwarded": "for=198.51.100.1"}
    assert client_address("127.0.0.3", headers, TRUSTED) == "127.0.0.3"


def test_with_no_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("10.1.2.3", {"x-forwarded-for": "203.0.113.5"}, []) == "10.1.2.3"


def test_a_trusted_peer_names_the_client_and_what_the_client_wrote_is_ignored() -> None:
    headers = {"x-forwarded-for": "evil, 203.0.113.5"}
    assert client_address(PROXY, headers, TRUSTED) == "203.0.113.5"


def test_a_forged_address_left_of_the_real_one_is_ignored() -> None:
    headers = {"x-forwarded-for": "198.51.100.99, 203.0.113.5"}
    assert client_address(PROXY, headers, TRUSTED) == "203.0.113.5"


def test_a_chain_of_two_trusted_proxies_is_skipped() -> None:
    # client -> 10.9.9.9 (edge) -> 10.1.2.3 (inner) -> us
    headers = {"x-forwarded-for": "198.51.100.1, 203.0.113.5, 10.9.9.9"}
    assert client_address(PROXY, headers, TRUSTED) == "203.0.113.5"


def test_a_bare_address_trusts_that_one_host() -> None:
    headers = {"x-forwarded-for": "203.0.113.5"}
    assert client_address("127.0.0.2", headers, TRUSTED) == "203.0.113.5"
    assert client_address("127.0.0.3", headers, TRUSTED) == "127.0.0.3"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ('for="[2001:db8::1]:4711"', "2001:db8::1"),
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
        ("for=192.0.2.60:8080", "192.0.2.60"),
        ('for=198.51.100.1, for="[2001:db8::1]:4711", for=10.9.9.9', "2001:db8::1"),
        ("For = 192.0.2.7", "192.0.2.7"),
    ],
)
def test_forwarded_names_the_client(forwarded: str, client: str) -> None:
    assert client_address(PROXY, {"forwarded": forwarded}, TRUSTED) == client


def test_both_headers_naming_one_client_are_believed() -> None:
    headers = {"forwarded": "for=192.0.2.60", "x-forwarded-for": "192.0.2.60"}
    assert client_address(PROXY, headers, TRUSTED) == "192.0.2.60"


@pytest.mark.parametrize(
    "headers",
    [
        # The proxy sets X-Forwarded-For and passes on the client's own Forwarded,
        {"forwarded": "for=198.51.100.1", "x-forwarded-for": "203.0.113.5"},
        # or the other way round: which one is which cannot be told.
        {"forwarded": "for=203.0.113.5", "x-forwarded-for": "198.51.100.1"},
        # A forged header of only our own proxies, or with no address at all.
        {"forwarded": "for=10.9.9.9", "x-forwarded-for": "203.0.113.5"},
        {"forwarded": "proto=https", "x-forwarded-for": "203.0.113.5"},
    ],
)
def test_both_headers_naming_different_clients_are_both_ignored(headers: dict[str, str]) -> None:
    # A client choosing its address would have a fresh one per request; as the
    # proxy's own address it shares the count of everyone who tries the same.
    assert client_address(PROXY, headers, TRUSTED) == PROXY


def test_every_hop_trusted_gives_the_leftmost() -> None:
    headers = {"x-forwarded-for": "10.9.9.9, 10.8.8.8"}
    assert client_address(PROXY, headers, TRUSTED) == "10.9.9.9"


def test_a_trusted_peer_without_headers_is_the_client() -> None:
    assert client_address(PROXY, {}, TRUSTED) == PROXY
    assert client_address(PROXY, {"x-forwarded-for": " , ,"}, TRUSTED) == PROXY


@pytest.mark.parametrize(
    "value",
    ["unknown", "_hidden", "not an address", "999.1.1.1", "[::1", "\x00", "1.2.3.4.5"],
)
def test_garbage_is_passed_on_as_text_and_never_trusted(value: str) -> None:
    # Garbage is not one of our proxies: it is where the chain stops (the
    # client wrote it or a proxy said it does not know), never a way past.
    assert not is_trusted(value, TRUSTED)
    address = client_address(PROXY, {"x-forwarded-for": f"203.0.113.5, {value}"}, TRUSTED)
    assert "203.0.113.5" not in address


@pytest.mark.parametrize("name", ["x-forwarded-for", "forwarded"])
def test_an_oversized_header_is_not_read_at_all(name: str) -> None:
    hops = ", ".join(["198.51.100.1"] * 1000)
    value = hops if name == "x-forwarded-for" else hops.replace("198", "for=198")
    assert len(value) > 2048
    assert client_address(PROXY, {name: value}, TRUSTED) == PROXY


def test_an_oversized_header_beside_a_good_one_makes_neither_believed() -> None:
    # Else a client would hide the proxy's header behind 2 KB and be read from its own.
    headers = {"forwarded": "for=198.51.100.1, " * 200, "x-forwarded-for": "203.0.113.5"}
    assert client_address(PROXY, headers, TRUSTED) == PROXY


def test_parse_networks_refuses_what_is_no_network() -> None:
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks(["not-a-network"])
    assert [str(n) for n in parse_networks(["127.0.0.2", "::1", "10.0.0.0/8"])] == [
        "127.0.0.2/32",
        "::1/128",
        "10.0.0.0/8",
    ]
