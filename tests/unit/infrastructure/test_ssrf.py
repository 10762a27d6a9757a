"""The SSRF guard: which webhook URLs we refuse to send to, and why we say so."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from application.errors import InvalidRequest, UnsafeTarget
from infrastructure.ssrf import (
    ParsedTarget,
    TargetGuard,
    parse_allowed_targets,
    system_resolver,
)

EXAMPLE_V4 = "93.184.215.14"
EXAMPLE_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


class FakeResolver:
    """A DNS stand-in: each name answers from a queue, the last answer repeating."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self._answers = answers
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        if host not in self._answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        queue = self._answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def _resolver() -> FakeResolver:
    return FakeResolver(
        {
            "example.com": [[EXAMPLE_V4, EXAMPLE_V6]],
            "internal.example": [["10.1.2.3"]],
            "metadata.google.internal": [["169.254.169.254"]],
            "ula.example": [["fd00::1"]],
            "mapped.example": [["::ffff:192.168.0.1"]],
            "scoped.example": [["fe80::1%eth0"]],
            "half-private.example": [[EXAMPLE_V4, "192.168.1.10"]],
        }
    )


# --- Hostile targets ------------------------------------------------------------------

HOSTILE = [
    # IPv4 in its usual spelling, one per category
    ("https://127.0.0.1/", "loopback"),
    ("https://127.0.0.1:8443/hook", "loopback"),
    ("https://10.0.0.1/", "private"),
    ("https://172.16.5.4/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://100.64.0.1/", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://192.0.0.8/", "reserved"),
    ("https://198.18.0.1/", "reserved"),
    ("https://240.0.0.1/", "reserved"),
    ("https://255.255.255.255/", "reserved"),
    ("https://224.0.0.1/", "multicast"),
    ("https://0.0.0.0/", "unspecified"),
    # numeric spellings inet_aton accepts
    ("https://2130706433/", "loopback"),
    ("https://0x7f000001/", "loopback"),
    ("https://0X7F000001/", "loopback"),
    ("https://017700000001/", "loopback"),
    ("https://0x7f.0.0.1/", "loopback"),
    ("https://0177.0.0.01/", "loopback"),
    ("https://127.1/", "loopback"),
    ("https://127.0.1/", "loopback"),
    ("https://127.0.0.1./", "loopback"),
    ("https://0/", "unspecified"),
    ("https://2852039166/", "link-local"),
    ("https://0xa9fea9fe/", "link-local"),
    ("https://025177524776/", "link-local"),
    ("https://0xa9.0376.169.0xfe/", "link-local"),
    ("https://169.254.43518/", "link-local"),
    ("https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "loopback"),  # fullwidth
    # IPv6
    ("https://[::1]/", "loopback"),
    ("https://[::]/", "unspecified"),
    ("https://[fc00::1]/", "private"),
    ("https://[fd12:3456::1]/", "private"),
    ("https://[fe80::1]/", "link-local"),
    ("https://[ff02::1]/", "multicast"),
    ("https://[2001:db8::1]/", "reserved"),
    # IPv6 embedding IPv4
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://[::ffff:7f00:1]/", "loopback"),
    ("https://[::ffff:a9fe:a9fe]/", "link-local"),
    ("https://[::127.0.0.1]/", "loopback"),
    ("https://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ("https://[64:ff9b::10.0.0.1]/", "private"),
    ("https://[2002:7f00:1::]/", "loopback"),
    ("https://[2002:a9fe:a9fe::1]/", "link-local"),
    ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),  # Teredo, client 127.0.0.1
    ("https://[fe80::1%25eth0]/", "zone id"),
    # names
    ("https://localhost/", "loopback"),
    ("https://LOCALHOST/", "loopback"),
    ("https://localhost./", "loopback"),
    ("https://foo.localhost/", "loopback"),
    ("https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "loopback"),  # fullwidth
    ("https://internal.example/", "private"),
    ("https://metadata.google.internal/", "link-local"),
    ("https://ula.example/", "private"),
    ("https://mapped.example/", "private"),
    ("https://scoped.example/", "zone id"),
    # spellings that make URL parsers disagree about the host
    ("https://%31%32%37.0.0.1/", "percent-encoded"),
    ("https://good.example@127.0.0.1/", "user name or password"),
    ("https://user:pass@example.com/", "user name or password"),
    ("https://example.com\\@127.0.0.1/", "backslash"),
    ("https://example.com /", "spaces"),
    ("https://exam\tple.com/", "control characters"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_hostile_target_is_refused_saying_why(url: str, reason: str) -> None:
    # Given a guard with no allow-list and a resolver that knows some internal names
    guard = TargetGuard(resolver=_resolver())

    # When the URL is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url(url)

    # Then it is refused, the message names the reason, and the error points at the url field
    assert reason in str(refused.value)
    assert refused.value.field == "url"


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_hostile_target_is_refused_again_at_send_time(url: str, reason: str) -> None:
    # Given a guard
    guard = TargetGuard(resolver=_resolver())

    # When the URL is about to be sent to (say, it was stored before the guard existed)
    with pytest.raises(UnsafeTarget) as refused:
        guard.resolve_for_send(url)

    # Then it is refused for the same reason
    assert reason in str(refused.value)


def test_refusal_message_names_host_address_and_policy() -> None:
    # Given a guard
    guard = TargetGuard(resolver=_resolver())

    # When a hex spelling of the metadata service is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url("https://0xa9fea9fe/")

    # Then the merchant reads what they wrote, what it means, and the rule
    assert str(refused.value) == (
        "webhook URL host 0xa9fea9fe resolves to 169.254.169.254, a link-local address "
        "(the cloud metadata service); we never send webhooks to loopback, private, "
        "link-local, multicast, reserved or unspecified addresses"
    )


def test_embedded_ipv4_is_named_in_the_message() -> None:
    # Given a guard
    guard = TargetGuard(resolver=_resolver())

    # When a NAT64 address wrapping the metadata service is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url("https://[64:ff9b::a9fe:a9fe]/")

    # Then the message says which IPv4 address hides inside and how
    assert "embeds the IPv4 address 169.254.169.254 (NAT64)" in str(refused.value)


def test_literal_targets_are_judged_without_asking_dns() -> None:
    # Given a guard whose resolver records every question
    resolver = _resolver()
    guard = TargetGuard(resolver=resolver)

    # When numeric and localhost targets are checked
    for url in ("https://2130706433/", "https://[::1]/", "https://localhost/"):
        with pytest.raises(UnsafeTarget):
            guard.check_url(url)

    # Then DNS was never consulted: no answer could launder them
    assert resolver.calls == []


# --- Public targets -------------------------------------------------------------------


def test_public_name_is_accepted_with_every_address_pinned() -> None:
    # Given a guard whose resolver answers example.com with public IPv4 and IPv6
    resolver = _resolver()
    guard = TargetGuard(resolver=resolver)

    # When the URL is registered
    target = guard.check_url("https://Example.COM./hooks/orders?x=1#ignored")

    # Then it is accepted, normalised, and carries both addresses in resolver order
    assert target == ParsedTarget(
        scheme="https",
        host="example.com",
        port=443,
        addresses=(ipaddress.IPv4Address(EXAMPLE_V4), ipaddress.IPv6Address(EXAMPLE_V6)),
    )
    assert resolver.calls == [("example.com", 443)]


@pytest.mark.parametrize(
    ("url", "host", "port", "address"),
    [
        (f"https://{EXAMPLE_V4}:8443/hook", EXAMPLE_V4, 8443, EXAMPLE_V4),
        (f"https://[{EXAMPLE_V6.upper()}]/", EXAMPLE_V6, 443, EXAMPLE_V6),
        ("https://[::ffff:93.184.215.14]/", "::ffff:5db8:d70e", 443, "::ffff:5db8:d70e"),
        ("https://[64:ff9b::8.8.8.8]/", "64:ff9b::808:808", 443, "64:ff9b::808:808"),
        ("https://[2002:808:808::1]/", "2002:808:808::1", 443, "2002:808:808::1"),
        ("https://1.1/", "1.0.0.1", 443, "1.0.0.1"),
    ],
)
def test_public_literal_is_accepted(url: str, host: str, port: int, address: str) -> None:
    # Given a guard whose resolver records every question
    resolver = _resolver()
    guard = TargetGuard(resolver=resolver)

    # When a public IP literal is registered
    target = guard.check_url(url)

    # Then it is accepted as that single address, without a DNS lookup
    assert (target.host, target.port) == (host, port)
    assert target.addresses == (ipaddress.ip_address(address),)
    assert resolver.calls == []


def test_parsed_target_is_frozen() -> None:
    # Given an accepted target
    target = TargetGuard(resolver=_resolver()).check_url("https://example.com/")

    # When code tries to repoint it
    with pytest.raises(AttributeError):
        target.host = "127.0.0.1"  # type: ignore[misc]

    # Then it still names the checked host
    assert target.host == "example.com"


# --- DNS: rebinding, mixed answers, failures -------------------------------------------


def test_dns_rebinding_is_caught_at_send_time() -> None:
    # Given a name that resolves to a public address once, then to loopback
    resolver = FakeResolver({"rebind.example": [[EXAMPLE_V4], ["127.0.0.1"]]})
    guard = TargetGuard(resolver=resolver)

    # When it is registered, then sent to
    registered = guard.check_url("https://rebind.example/hook")
    with pytest.raises(UnsafeTarget) as refused:
        guard.resolve_for_send("https://rebind.example/hook")

    # Then registration passed, the send-time lookup was fresh and refused loopback
    assert registered.addresses == (ipaddress.IPv4Address(EXAMPLE_V4),)
    assert len(resolver.calls) == 2
    assert "resolves to 127.0.0.1, a loopback address" in str(refused.value)


def test_one_private_address_among_public_ones_is_refused() -> None:
    # Given a name answering with a public and a private address
    guard = TargetGuard(resolver=_resolver())

    # When it is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url("https://half-private.example/")

    # Then the private one sinks it: the client may pick any answer
    assert "192.168.1.10, a private address" in str(refused.value)


def test_send_time_resolution_returns_the_addresses_to_connect_to() -> None:
    # Given a name whose public address changes between lookups
    resolver = FakeResolver({"moving.example": [[EXAMPLE_V4], ["8.8.8.8", "8.8.8.8"]]})
    guard = TargetGuard(resolver=resolver)
    guard.check_url("https://moving.example/")

    # When it is resolved for sending
    target = guard.resolve_for_send("https://moving.example/")

    # Then the fresh, de-duplicated answer is what the sender is pinned to
    assert target.addresses == (ipaddress.IPv4Address("8.8.8.8"),)


@pytest.mark.parametrize(
    "resolver",
    [
        FakeResolver({}),
        FakeResolver({"nowhere.example": [[]]}),
    ],
    ids=["lookup-fails", "no-answers"],
)
def test_host_that_does_not_resolve_is_an_invalid_request(resolver: FakeResolver) -> None:
    # Given a name DNS cannot answer
    guard = TargetGuard(resolver=resolver)

    # When it is registered
    with pytest.raises(InvalidRequest) as refused:
        guard.check_url("https://nowhere.example/")

    # Then the merchant is told the host does not resolve (broken, not hostile)
    assert not isinstance(refused.value, UnsafeTarget)
    assert "does not resolve" in str(refused.value)
    assert refused.value.field == "url"


def test_system_resolver_returns_address_strings() -> None:
    # Given the default resolver and a numeric host, which getaddrinfo answers offline
    # When it is asked
    answers = system_resolver("127.0.0.1", 443)

    # Then it returns plain address strings
    assert answers == ["127.0.0.1"]


# --- Schemes and the allow-list --------------------------------------------------------


def test_http_to_public_target_needs_allow_http() -> None:
    # Given a guard without allow_http
    guard = TargetGuard(resolver=_resolver())

    # When a plain http URL is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url("http://example.com/hook")

    # Then the message says https is required
    assert "must use https" in str(refused.value)


def test_http_is_accepted_when_allowed() -> None:
    # Given a guard with allow_http
    guard = TargetGuard(allow_http=True, resolver=_resolver())

    # When a plain http URL is registered
    target = guard.check_url("http://example.com/hook")

    # Then it is accepted on port 80
    assert (target.scheme, target.port) == ("http", 80)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:8000/hook", "127.0.0.1"),
        ("http://[::1]:8000/hook", "::1"),
        ("http://0x7f000001:8000/hook", "127.0.0.1"),
    ],
)
def test_allow_listed_loopback_is_accepted_over_http(url: str, address: str) -> None:
    # Given a development guard that opens loopback
    guard = TargetGuard(
        allowed_networks=parse_allowed_targets("127.0.0.0/8,::1/128"), resolver=_resolver()
    )

    # When a local http receiver is registered
    target = guard.check_url(url)

    # Then it is accepted, http included, because every address is allow-listed
    assert target.scheme == "http"
    assert target.port == 8000
    assert target.addresses == (ipaddress.ip_address(address),)


def test_allow_listed_localhost_resolves_to_both_loopbacks() -> None:
    # Given a development guard that opens loopback
    guard = TargetGuard(
        allowed_networks=parse_allowed_targets("127.0.0.0/8,::1/128"), resolver=_resolver()
    )

    # When http://localhost is registered
    target = guard.check_url("http://localhost:8000/")

    # Then it is pinned to the loopback addresses, never to whatever DNS says
    assert target.addresses == (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def test_allow_list_opens_only_the_listed_ranges() -> None:
    # Given a guard that opens IPv4 loopback only
    guard = TargetGuard(allowed_networks=parse_allowed_targets("127.0.0.0/8"), resolver=_resolver())

    # When localhost (127.0.0.1 and ::1) and a private address are registered
    with pytest.raises(UnsafeTarget) as localhost:
        guard.check_url("http://localhost/")
    with pytest.raises(UnsafeTarget) as private:
        guard.check_url("https://10.0.0.1/")

    # Then IPv6 loopback and the private range stay closed, IPv4 loopback does not
    assert "resolves to ::1, a loopback address" in str(localhost.value)
    assert "a private address" in str(private.value)
    assert guard.check_url("https://127.0.0.2/").addresses == (ipaddress.IPv4Address("127.0.0.2"),)


def test_ipv4_allow_list_does_not_open_the_same_bits_in_ipv6() -> None:
    # Given a guard that opens 127.0.0.0/8 (as integers, ::7f00:1 carries the same bits)
    guard = TargetGuard(allowed_networks=parse_allowed_targets("127.0.0.0/8"), resolver=_resolver())

    # When the IPv4-compatible IPv6 spelling is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url("https://[::7f00:1]/")

    # Then it is judged as IPv6 and refused
    assert "loopback" in str(refused.value)


def test_http_with_partly_allow_listed_answer_needs_https() -> None:
    # Given a guard opening only one of the two addresses example.com answers with
    guard = TargetGuard(
        allowed_networks=parse_allowed_targets(f"{EXAMPLE_V4}/32"), resolver=_resolver()
    )

    # When example.com is registered over http
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url("http://example.com/")

    # Then http is refused: the IPv6 answer is an ordinary public target
    assert "must use https" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)"],
)
def test_unsupported_scheme_is_refused(url: str) -> None:
    # Given a guard
    guard = TargetGuard(allow_http=True, resolver=_resolver())

    # When a non-HTTP URL is registered
    with pytest.raises(UnsafeTarget) as refused:
        guard.check_url(url)

    # Then the message says https is required
    assert "must use https" in str(refused.value)


# --- Malformed URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("example.com/hook", "absolute"),
        ("https:///hook", "no host"),
        ("https://:443/hook", "no host"),
        ("https://example.com:99999/", "between 1 and 65535"),
        ("https://example.com:0/", "between 1 and 65535"),
        ("https://example.com:abc/", "not a number"),
        ("https://example.com:+443/", "not a number"),
        ("https://[::1/", "not a valid URL"),
        ("https://[not-ipv6]/", "not a valid URL"),
        ("https://1.2.3.999/", "looks like an IPv4 address"),
        ("https://1.2.3.4.5/", "looks like an IPv4 address"),
        ("https://08.0.0.1/", "looks like an IPv4 address"),
        ("https://example.123/", "looks like an IPv4 address"),
        ("https://exa!mple.com/", "not a valid host name"),
        ("https://-example.com/", "not a valid host name"),
        ("https://example..com/", "not a valid host name"),
        (f"https://{'a' * 64}.com/", "not a valid host name"),
    ],
)
def test_malformed_url_is_an_invalid_request(url: str, reason: str) -> None:
    # Given a guard
    guard = TargetGuard(resolver=_resolver())

    # When a malformed URL is registered
    with pytest.raises(InvalidRequest) as refused:
        guard.check_url(url)

    # Then it is reported as a bad url field, with the reason
    assert reason in str(refused.value)
    assert refused.value.field == "url"


def test_empty_port_means_the_default_port() -> None:
    # Given a guard
    guard = TargetGuard(resolver=_resolver())

    # When a URL with an empty port is registered
    target = guard.check_url("https://example.com:/hook")

    # Then the scheme's default port is used
    assert target.port == 443


# --- parse_allowed_targets -------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", " , ,"])
def test_blank_allow_list_is_empty(value: str) -> None:
    # Given a blank WEBROUND_ALLOWED_TARGETS
    # When it is parsed
    networks = parse_allowed_targets(value)

    # Then nothing is opened
    assert networks == ()


def test_allow_list_parses_cidrs_of_both_families() -> None:
    # Given a comma-separated list with stray spaces and a bare address
    # When it is parsed
    networks = parse_allowed_targets(" 127.0.0.0/8 , ::1/128,10.1.2.3")

    # Then each entry is a network, a bare address being a single-address network
    assert networks == (
        ipaddress.IPv4Network("127.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
        ipaddress.IPv4Network("10.1.2.3/32"),
    )


@pytest.mark.parametrize("bad", ["nonsense", "10.0.0.0/33", "10.0.0.1/8", "fe80::/129"])
def test_allow_list_names_the_bad_entry(bad: str) -> None:
    # Given an allow-list with one bad entry
    value = f"127.0.0.0/8,{bad}"

    # When it is parsed
    with pytest.raises(ValueError, match="is not a CIDR network") as error:
        parse_allowed_targets(value)

    # Then the error names that entry
    assert repr(bad) in str(error.value)
