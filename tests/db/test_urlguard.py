"""The SSRF guard: literal addresses, names that resolve to them, allowlists, odd encodings."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from db.urlguard import UnsafeUrl, blocked_reason, check_url, parse_allowlist, vet_url

PUBLIC = "93.184.216.34"


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Answer getaddrinfo from `table`; unknown names fail like a real resolver."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in table[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.0.0.2:8080/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://172.16.5.4/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fc00::1]/hook", "private"),
        ("http://[fd12:3456::1]/hook", "private"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::]/hook", "unspecified"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://100.64.0.1/hook", "carrier-grade NAT"),
        ("http://[::ffff:127.0.0.1]/hook", "embedding 127.0.0.1"),
        ("http://[::ffff:169.254.169.254]/hook", "embedding 169.254.169.254"),
        ("http://[64:ff9b::a00:1]/hook", "embedding 10.0.0.1"),
        ("http://[2002:a00:1::1]/hook", "embedding 10.0.0.1"),
    ],
)
def test_literal_private_addresses_are_refused(url, words):
    with pytest.raises(UnsafeUrl) as caught:
        check_url(url, "")
    assert words in caught.value.reason


@pytest.mark.parametrize("host", ["0x7f000001", "2130706433", "127.1", "0177.0.0.1"])
def test_odd_ipv4_spellings_are_resolved_and_refused(host):
    # These reach getaddrinfo (not ip_address) and come back as 127.0.0.1.
    with pytest.raises(UnsafeUrl, match="loopback"):
        check_url(f"http://{host}/hook", "")


def test_localhost_is_refused_unless_allowlisted():
    with pytest.raises(UnsafeUrl, match=r"localhost resolves to .*loopback"):
        check_url("http://localhost:9000/hook", "")
    check_url("http://localhost:9000/hook", "localhost")
    check_url("http://LOCALHOST.:9000/hook", "localhost")


def test_name_resolving_to_private_address_is_refused(monkeypatch):
    fake_dns(
        monkeypatch,
        {
            "internal.example": ["10.1.2.3"],
            "metadata.example": ["169.254.169.254"],
            "loop6.example": ["::1"],
            "mixed.example": [PUBLIC, "192.168.0.10"],
            "public.example": [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"],
        },
    )
    for host, words in [
        ("internal.example", "10.1.2.3, which is a private address"),
        ("metadata.example", "169.254.169.254, which is a link-local address"),
        ("loop6.example", "::1, which is a loopback address"),
        # One bad address among good ones is enough to refuse.
        ("mixed.example", "192.168.0.10, which is a private address"),
    ]:
        with pytest.raises(UnsafeUrl) as caught:
            check_url(f"https://{host}/hook", "")
        assert words in caught.value.reason
    target = vet_url("https://public.example/hook", "")
    assert target.addresses == (PUBLIC, "2606:2800:220:1:248:1893:25c8:1946")
    assert (target.host, target.port, target.scheme) == ("public.example", 443, "https")


def test_unresolvable_host_is_refused_with_a_clear_message(monkeypatch):
    fake_dns(monkeypatch, {})
    with pytest.raises(UnsafeUrl, match=r"'nowhere\.example' does not resolve"):
        check_url("https://nowhere.example/hook", "")


def test_allowlist_by_host_and_by_cidr(monkeypatch):
    asked = fake_dns(monkeypatch, {"hooks.internal": ["10.20.30.40"]})
    with pytest.raises(UnsafeUrl):
        check_url("http://hooks.internal/x", "")
    check_url("http://hooks.internal/x", "hooks.internal")
    check_url("http://hooks.internal/x", "10.20.0.0/16")
    check_url("http://hooks.internal/x", " other.host , 10.20.30.40 ")
    with pytest.raises(UnsafeUrl):
        check_url("http://hooks.internal/x", "10.21.0.0/16,other.host")
    assert asked  # names go through getaddrinfo
    check_url("http://10.0.0.1/x", "10.0.0.0/8")
    check_url("http://[::1]:8080/x", "::1")
    check_url("http://[fd00::5]/x", "[fd00::/8]")
    # An allowlisted network does not open others.
    with pytest.raises(UnsafeUrl):
        check_url("http://169.254.169.254/x", "10.0.0.0/8")
    with pytest.raises(UnsafeUrl):
        check_url("http://127.0.0.2/x", "127.0.0.1")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://127.0.0.1:6379/_INFO", "http or https"),
        ("http:///nohost", "must name a host"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\r\nX: y", "whitespace"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com/" + "a" * 2100, "at most 2048"),
        ("not a url", "whitespace"),
        ("", "http or https"),
    ],
)
def test_malformed_urls_are_refused(url, words):
    with pytest.raises(UnsafeUrl) as caught:
        check_url(url, "")
    assert words in caught.value.reason


def test_public_literal_address_passes_without_dns(monkeypatch):
    asked = fake_dns(monkeypatch, {})
    assert vet_url("https://93.184.216.34:8443/x", "").addresses == (PUBLIC,)
    assert asked == []


def test_blocked_reason_and_allowlist_parsing():
    import ipaddress

    assert blocked_reason(ipaddress.ip_address(PUBLIC)) is None
    assert blocked_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert blocked_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert blocked_reason(ipaddress.ip_address("192.0.2.1")) is not None  # documentation range
    allow = parse_allowlist("Example.COM., 10.0.0.0/8, ::1, ,")
    assert allow.hosts == frozenset({"example.com"})
    assert [str(n) for n in allow.networks] == ["10.0.0.0/8", "::1/128"]
    assert allow.allows_address(ipaddress.ip_address("10.9.9.9"))
    assert not allow.allows_address(ipaddress.ip_address("11.0.0.1"))
