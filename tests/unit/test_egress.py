"""The egress policy: which stream hosts are allowed, which addresses are private."""

from __future__ import annotations

import ipaddress

import pytest

from shared.egress import (
    DEFAULT_STREAM_HOST_SUFFIXES,
    Refusal,
    StreamPolicy,
    canonical_host,
    host_allowed,
    is_private,
    parse_host_list,
    proxy_refusal,
    resolve,
)

TIKTOK = StreamPolicy()


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("pull-flv-l1-va01.tiktokcdn.com", "pull-flv-l1-va01.tiktokcdn.com"),
        ("Pull-FLV.TikTokCDN.com", "pull-flv.tiktokcdn.com"),
        ("tiktokcdn.com.", "tiktokcdn.com"),  # fully qualified: the same host
        # Fullwidth letters and dot: IDNA maps them to plain ones, as a resolver would.
        ("".join(chr(ord(c) + 0xFEE0) for c in "tiktokcdn.com"), "tiktokcdn.com"),
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("t\u0456ktokcdn.com", "xn--tktokcdn-thh.com"),  # a Cyrillic i: another host
        ("[::1]", "::1"),
        ("::FFFF:127.0.0.1", "::ffff:7f00:1"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_canonical_hosts(host: str, canonical: str) -> None:
    assert canonical_host(host) == canonical


@pytest.mark.parametrize(
    "host",
    [
        "",
        "a..b",
        "-a.tiktokcdn.com",
        "a_b.tiktokcdn.com",
        "tiktokcdn.com:443",
        "tiktokcdn.com..",
        "evil.com/tiktokcdn.com",
        "evil.com@tiktokcdn.com",
        # Numeric forms the C resolver reads as 127.0.0.1.
        "2130706433",
        "127.1",
        "0x7f000001",
        "0x7f.0.0.1",
        "017700000001",
        "127.0.0.01",
    ],
)
def test_what_is_no_host(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        canonical_host(host)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("tiktokcdn.com", True),
        ("pull-flv-l1-va01.tiktokcdn.com", True),
        ("pull-f5-tt03.fcdn.eu.tiktokcdn.com", True),
        ("pull-flv-f77-tt04.tiktokcdn-eu.com", True),
        ("pull-hls-l11-va01.tiktokcdn-us.com", True),
        ("evil-tiktokcdn.com", False),  # not on a label boundary
        ("tiktokcdn.com.evil.com", False),
        ("eviltiktokcdn.com", False),
        ("tiktokcdn.co", False),
        ("www.tiktok.com", False),  # TikTok, but no stream host
        ("p16-sign.ibyteimg.com", False),
    ],
)
def test_suffixes_match_on_label_boundaries(host: str, allowed: bool) -> None:
    assert host_allowed(canonical_host(host), DEFAULT_STREAM_HOST_SUFFIXES) is allowed


def test_an_ip_entry_allows_that_address_only() -> None:
    entries = parse_host_list(["127.0.0.1", "localhost"])
    assert host_allowed("127.0.0.1", entries)
    assert not host_allowed("127.0.0.2", entries)
    assert not host_allowed("127.0.0.1", ("0.0.1",))  # never "suffixes" of an address
    assert host_allowed("localhost", entries)
    assert host_allowed("cdn.localhost", entries)


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # the cloud metadata service
        ("0.0.0.0", True),
        ("100.64.0.1", True),  # CGNAT / shared address space: refused too
        ("198.18.0.1", True),
        ("224.0.0.1", True),  # multicast
        ("255.255.255.255", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("::ffff:169.254.169.254", True),
        ("::ffff:10.0.0.1", True),
        ("::127.0.0.1", True),  # IPv4-compatible
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("2001:db8::1", True),  # documentation
        ("8.8.8.8", False),
        ("151.101.1.1", False),
        ("2606:4700::1", False),
        ("::ffff:8.8.8.8", False),  # mapped, public
        ("64:ff9b::808:808", False),  # NAT64 of a public address
        ("2002:808:808::", False),  # 6to4 of a public address
    ],
)
def test_private_addresses(address: str, private: bool) -> None:
    assert is_private(ipaddress.ip_address(address)) is private


@pytest.mark.parametrize(
    ("scheme", "host", "refusal"),
    [
        ("https", "pull-flv-l1-va01.tiktokcdn.com", None),
        ("http", "pull-flv-l1-va01.tiktokcdn.com", None),
        ("HTTPS", "PULL.TIKTOKCDN.COM.", None),
        ("ftp", "pull.tiktokcdn.com", Refusal.SCHEME),
        ("file", "", Refusal.SCHEME),
        ("https", "", Refusal.BAD_HOST),
        ("https", "2130706433", Refusal.BAD_HOST),
        ("https", "evil-tiktokcdn.com", Refusal.HOST_NOT_ALLOWED),
        ("https", "169.254.169.254", Refusal.HOST_NOT_ALLOWED),
        ("https", "localhost", Refusal.HOST_NOT_ALLOWED),
    ],
)
def test_the_tiktok_policy(scheme: str, host: str, refusal: Refusal | None) -> None:
    assert TIKTOK.refusal(scheme, host) == refusal


def test_an_allowed_private_address_still_needs_the_setting() -> None:
    listed = StreamPolicy(parse_host_list(["127.0.0.1", "::1", "localhost"]))
    assert listed.refusal("http", "127.0.0.1") == Refusal.PRIVATE_ADDRESS
    assert listed.refusal("http", "[::1]") == Refusal.PRIVATE_ADDRESS
    assert listed.refusal("http", "localhost") is None  # a name: judged once resolved
    loopback = [ipaddress.ip_address("127.0.0.1")]
    assert listed.address_refusal(loopback) == Refusal.RESOLVES_PRIVATE
    both = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("::1")]
    assert listed.address_refusal(both) == Refusal.RESOLVES_PRIVATE  # any one is enough
    assert listed.address_refusal([ipaddress.ip_address("8.8.8.8")]) is None
    allowing = StreamPolicy(listed.suffixes, allow_private=True)
    assert allowing.refusal("http", "127.0.0.1") is None
    assert allowing.address_refusal(loopback) is None


@pytest.mark.parametrize(
    ("host", "allow", "refusal"),
    [
        ("proxy.example", False, None),  # a name: the caller resolves it
        ("203.0.113.7", False, Refusal.PRIVATE_ADDRESS),  # documentation range
        ("8.8.8.8", False, None),
        ("127.0.0.1", False, Refusal.PRIVATE_ADDRESS),
        ("127.0.0.1", True, None),
        ("[::ffff:10.0.0.1]", False, Refusal.PRIVATE_ADDRESS),
        ("2130706433", True, Refusal.BAD_HOST),
    ],
)
def test_proxy_hosts(host: str, allow: bool, refusal: Refusal | None) -> None:
    assert proxy_refusal(host, allow_private=allow) == refusal


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "empty"),
        (["https://tiktokcdn.com"], "no scheme"),
        (["tiktokcdn.com:443"], "no scheme, port or path"),
        (["*.tiktokcdn.com"], "subdomains are allowed"),
        ([".tiktokcdn.com"], "subdomains are allowed"),
        (["tiktok cdn.com"], "not a host name"),
    ],
)
def test_bad_allow_lists(entries: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_host_list(entries)


def test_allow_lists_are_canonical_and_deduplicated() -> None:
    assert parse_host_list(["TikTokCDN.com.", "tiktokcdn.com", "[::1]"]) == ("tiktokcdn.com", "::1")


async def test_resolve_gives_every_address_of_a_name() -> None:
    found = await resolve("localhost", 80)
    assert found
    assert all(is_private(a) for a in found)
    with pytest.raises(OSError):  # noqa: PT011  (gaierror; its text is the resolver's)
        await resolve("no-such-host.invalid", 80)
