"""SSRF guard: decides whether a merchant's webhook URL may ever be sent a request.

Lives here: ``TargetGuard`` (``check_url`` at registration, ``resolve_for_send`` before
each delivery), the ``ParsedTarget`` it returns, ``parse_allowed_targets`` (the
``WEBROUND_ALLOWED_TARGETS`` setting) and ``system_resolver`` (the default DNS lookup).

A target is refused when any address its host resolves to is loopback, private,
link-local (the cloud metadata service 169.254.169.254 included), multicast, reserved,
unspecified or otherwise not globally routable, unless that address lies inside an
explicitly allow-listed network. IPv6 addresses that embed an IPv4 address
(IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are also judged by that IPv4.

URL rules, decided here once:

* scheme: https; http only when ``allow_http`` is set or every address is allow-listed.
* refused as unsafe (``UnsafeTarget``): credentials (``user:pass@``), percent-encoded
  hosts, IPv6 zone ids (``%eth0``), whitespace, control characters or backslashes
  anywhere in the URL. These have no legitimate use in a webhook URL and are classic
  ways to make two URL parsers disagree about the host.
* refused as malformed (``InvalidRequest``, field ``url``): no host, a bad port, a
  host that looks numeric but is no IPv4 address, a host that does not resolve.
* accepted and ignored: the fragment (clients never send it) and one trailing dot.
* hosts written as numbers in any spelling ``inet_aton`` accepts (``2130706433``,
  ``0x7f.1``, ``0177.0.0.01``, ``127.1``) are IPv4 literals; ``localhost`` and
  ``*.localhost`` always mean loopback (RFC 6761) and are never looked up.

The send-time check resolves the name again, so a DNS answer that changes after
registration (rebinding) is caught; the sender must connect only to the returned
addresses so that nothing resolves the name a third time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

from application.errors import InvalidRequest, UnsafeTarget

__all__ = [
    "IPAddress",
    "IPNetwork",
    "ParsedTarget",
    "Resolver",
    "TargetGuard",
    "parse_allowed_targets",
    "system_resolver",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver: TypeAlias = Callable[[str, int], Sequence[str]]

_POLICY = (
    "we never send webhooks to loopback, private, link-local, multicast, reserved "
    "or unspecified addresses"
)
_DEFAULT_PORTS = {"https": 443, "http": 80}
_METADATA_SERVICE = ipaddress.IPv4Address("169.254.169.254")
_LOCALHOST_ADDRESSES: tuple[IPAddress, ...] = (
    ipaddress.IPv4Address("127.0.0.1"),
    ipaddress.IPv6Address("::1"),
)

# Our own tables rather than ipaddress.is_private/is_global alone: those shift between
# Python versions (3.11 calls 192.0.0.8 global) and name no category for a message.
_IPV4_SPECIAL = tuple(
    (ipaddress.IPv4Network(cidr), category)
    for cidr, category in (
        ("0.0.0.0/8", "reserved"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "private"),  # shared address space behind carrier-grade NAT
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "reserved"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes the broadcast 255.255.255.255
    )
)
_IPV6_SPECIAL = tuple(
    (ipaddress.IPv6Network(cidr), category)
    for cidr, category in (
        ("::/96", "reserved"),  # deprecated IPv4-compatible form
        ("64:ff9b:1::/48", "private"),  # local-use NAT64
        ("100::/64", "reserved"),
        ("2001::/23", "reserved"),  # IETF protocol assignments, Teredo among them
        ("2001:db8::/32", "reserved"),
        ("3fff::/20", "reserved"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Through these prefixes the packet really goes to the embedded IPv4 address, so a
# public embedded address makes the whole address acceptable.
_TRANSLATING_KINDS = frozenset({"IPv4-mapped", "NAT64", "6to4"})

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# WHATWG's "ends in a number": such a host is an IPv4 address or nothing.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


@dataclass(frozen=True)
class ParsedTarget:
    """A checked target: where the sender may connect, and the host to name there."""

    scheme: str
    host: str  # lower-case ASCII (IDNA) name, or the canonical IP for a literal
    port: int
    addresses: tuple[IPAddress, ...]


def parse_allowed_targets(value: str) -> tuple[IPNetwork, ...]:
    """Parse ``WEBROUND_ALLOWED_TARGETS``: comma-separated CIDRs, blank for none.

    Raises ValueError naming the first entry that is not a network (host bits set
    counts: ``10.0.0.1/8`` is more likely a typo than a wish to open 10.0.0.0/8).
    """
    networks: list[IPNetwork] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ValueError(
                f"WEBROUND_ALLOWED_TARGETS entry {entry!r} is not a CIDR network: {exc}"
            ) from exc
    return tuple(networks)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address a TCP connection to ``host`` could use, as getaddrinfo reports them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [
        str(sockaddr[0])
        for family, _, _, _, sockaddr in infos
        if family in (socket.AF_INET, socket.AF_INET6)
    ]


class TargetGuard:
    """Refuses webhook URLs that lead anywhere but the public internet."""

    def __init__(
        self,
        allowed_networks: Sequence[IPNetwork] = (),
        allow_http: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        self._allowed_networks = tuple(allowed_networks)
        self._allow_http = allow_http
        self._resolver: Resolver = resolver if resolver is not None else system_resolver

    def check_url(self, url: str) -> ParsedTarget:
        """The registration check; raises UnsafeTarget or InvalidRequest saying why."""
        return self._inspect(url)

    def resolve_for_send(self, url: str) -> ParsedTarget:
        """The send-time check: resolves afresh; connect only to the returned addresses.

        A failed lookup raises InvalidRequest, never UnsafeTarget, so a sender can tell a
        DNS hiccup worth retrying from a target that must never be contacted.
        """
        return self._inspect(url)

    def _inspect(self, url: str) -> ParsedTarget:
        scheme, written_host, host, port, literal = _split_url(url)
        if literal is not None:
            addresses: tuple[IPAddress, ...] = (literal,)
        elif host == "localhost" or host.endswith(".localhost"):
            addresses = _LOCALHOST_ADDRESSES
        else:
            addresses = self._resolve(written_host, host, port)

        for address in addresses:
            if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
                raise UnsafeTarget(
                    f"webhook URL host {written_host} resolves to {address}, an IPv6 address "
                    f"with a zone id, which names a local network interface; {_POLICY}"
                )
            if self._is_allowed(address):
                continue
            reason = _refusal(address)
            if reason is not None:
                raise UnsafeTarget(
                    f"webhook URL host {written_host} resolves to {address}, {reason}; {_POLICY}"
                )

        if (
            scheme == "http"
            and not self._allow_http
            and not all(self._is_allowed(address) for address in addresses)
        ):
            raise UnsafeTarget(
                "webhook URLs must use https; plain http is only accepted for "
                "allow-listed development targets"
            )
        return ParsedTarget(scheme=scheme, host=host, port=port, addresses=addresses)

    def _resolve(self, written_host: str, host: str, port: int) -> tuple[IPAddress, ...]:
        unresolved = f"webhook URL host {written_host} does not resolve to any address"
        try:
            answers = self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise InvalidRequest(f"{unresolved}; check the host name", field="url") from exc
        if not answers:
            raise InvalidRequest(f"{unresolved}; check the host name", field="url")
        try:
            # dict.fromkeys: drop duplicates, keep the resolver's preference order.
            return tuple(dict.fromkeys(ipaddress.ip_address(answer) for answer in answers))
        except ValueError as exc:
            raise InvalidRequest(
                f"webhook URL host {written_host} resolved to something that is not an "
                f"IP address ({exc})",
                field="url",
            ) from exc

    def _is_allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self._allowed_networks)


# The shape of a webhook URL the API takes, published as its pattern: http(s), a host that
# is a DNS name (its last label starts with a letter, so no numeric IPv4 spelling hides
# in it), a dotted IPv4 address or a bracketed IPv6 one, a port from 1 to 65535, and a
# path, query and fragment of URL characters. Which addresses a URL may reach is not a
# shape: the checks below (and the allow-list) decide that, with a 422 naming `url`.
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = "[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    f"(({_H16}:){{7}}{_H16}|({_H16}:){{1,7}}:|({_H16}:){{1,6}}:{_H16}"
    f"|({_H16}:){{1,5}}(:{_H16}){{1,2}}|({_H16}:){{1,4}}(:{_H16}){{1,3}}"
    f"|({_H16}:){{1,3}}(:{_H16}){{1,4}}|({_H16}:){{1,2}}(:{_H16}){{1,5}}"
    f"|{_H16}:(:{_H16}){{1,6}}|:((:{_H16}){{1,7}}|:))"
)
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = (
    f"^https?://(({_LABEL}\\.)+{_TOP_LABEL}|({_OCTET}\\.){{3}}{_OCTET}|\\[{_IPV6}\\])"
    f"(:{_PORT})?([/?#][A-Za-z0-9._~!$&'()*+,;=:@%/?#-]*)?$"
)


URL_SHAPE = (
    "must be an https URL whose host is a DNS name (its last label starting with a "
    "letter; an IDN written as xn--…), a dotted IPv4 address or a bracketed IPv6 address, "
    "with a port from 1 to 65535"
)


class _NotLookedUp(Exception):
    """Raised instead of resolving a name: explaining a shape asks no DNS."""


def _no_lookup(host: str, port: int) -> list[str]:
    raise _NotLookedUp


def url_problem(url: str) -> str:
    """Why a URL without the published shape (`URL_PATTERN`) is refused: the guard's own
    reason where it has one without resolving a name (a scheme, a user name, a loopback
    or metadata address however it is spelled), else the shape it must have."""
    try:
        TargetGuard(resolver=_no_lookup).check_url(url)
    except (UnsafeTarget, InvalidRequest) as error:
        return str(error)
    except _NotLookedUp:
        pass
    return URL_SHAPE


def _split_url(url: str) -> tuple[str, str, str, int, IPAddress | None]:
    """(scheme, host as written, normalised host, port, IP if the host is a literal)."""
    if not url:
        raise InvalidRequest("webhook URL is empty", field="url")
    if any(char.isspace() or not char.isprintable() or char == "\\" for char in url):
        raise UnsafeTarget("webhook URL must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidRequest(f"webhook URL is not a valid URL ({exc})", field="url") from exc

    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidRequest("webhook URL must be an absolute https:// URL", field="url")
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeTarget(f"webhook URLs must use https; {scheme}: URLs are not supported")
    netloc = parts.netloc
    if "@" in netloc:
        raise UnsafeTarget(
            "webhook URL must not contain a user name or password before the host "
            "(user:password@host); that form is a known way to disguise the real host"
        )

    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise InvalidRequest("webhook URL has an unclosed [ in its host", field="url")
        written_host, after_host = netloc[1:end], netloc[end + 1 :]
    else:
        written_host, colon, port_text = netloc.partition(":")
        after_host = colon + port_text
    if not written_host:
        raise InvalidRequest("webhook URL has no host", field="url")
    port = _parse_port(after_host, _DEFAULT_PORTS[scheme])

    literal: IPAddress | None
    if netloc.startswith("["):
        host, literal = _parse_bracketed_host(written_host)
    else:
        host, literal = _parse_plain_host(written_host)
    return scheme, written_host, host, port, literal


def _parse_port(after_host: str, default: int) -> int:
    if after_host in ("", ":"):
        return default
    digits = after_host[1:]
    if after_host[0] != ":" or not (digits.isascii() and digits.isdigit()):
        raise InvalidRequest(f"webhook URL port {after_host!r} is not a number", field="url")
    port = int(digits)
    if not 1 <= port <= 65535:
        raise InvalidRequest(f"webhook URL port {port} is not between 1 and 65535", field="url")
    return port


def _parse_bracketed_host(written_host: str) -> tuple[str, IPAddress]:
    if "%" in written_host:
        raise UnsafeTarget(
            f"webhook URL host [{written_host}] carries an IPv6 zone id, which names a "
            f"local network interface; {_POLICY}"
        )
    try:
        address = ipaddress.IPv6Address(written_host)
    except ValueError as exc:
        raise InvalidRequest(
            f"webhook URL host [{written_host}] is not an IPv6 address", field="url"
        ) from exc
    return address.compressed, address


def _parse_plain_host(written_host: str) -> tuple[str, IPAddress | None]:
    if "%" in written_host:
        raise UnsafeTarget(
            f"webhook URL host {written_host} is percent-encoded; write the host name plainly"
        )
    host = written_host
    if not host.isascii():
        try:
            # Nameprep folds look-alikes (fullwidth digits become 127.0.0.1), so every
            # check below runs on what the resolver would actually be asked.
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidRequest(
                f"webhook URL host {written_host} is not a valid host name", field="url"
            ) from exc
    host = host.lower().removesuffix(".")

    if _NUMERIC_LABEL.fullmatch(host.rpartition(".")[2]):
        address = _parse_ipv4_number(host)
        if address is None:
            raise InvalidRequest(
                f"webhook URL host {written_host} looks like an IPv4 address but is not one",
                field="url",
            )
        return str(address), address
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        raise InvalidRequest(
            f"webhook URL host {written_host} is not a valid host name", field="url"
        )
    return host, None


def _parse_ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address inet_aton reads in ``host`` (``127.1``, ``0x7f.0.0.1``...), or None.

    Pure Python rather than socket.inet_aton so the verdict does not depend on the C
    library (glibc, for one, ignores anything after a space).
    """
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:] or "0", 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if not digits.isascii() or not digits.isalnum():
            return None
        try:
            numbers.append(int(digits, base))
        except ValueError:
            return None
    *leading, last = numbers
    # Each leading part is one byte; the last fills every byte that is left.
    if any(number > 255 for number in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be contacted ("a loopback address"), or None if public."""
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_refusal(address)
    return _ipv6_refusal(address)


def _ipv4_refusal(address: ipaddress.IPv4Address) -> str | None:
    if address.is_unspecified:
        return "an unspecified address"
    if address == _METADATA_SERVICE:
        return "a link-local address (the cloud metadata service)"
    for network, category in _IPV4_SPECIAL:
        if address in network:
            return f"a {category} address"
    # Whatever Python knows about that our table does not.
    if not address.is_global:
        return "a reserved address"
    return None


def _ipv6_refusal(address: ipaddress.IPv6Address) -> str | None:
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, ipv4 = embedded
        reason = _ipv4_refusal(ipv4)
        if reason is not None:
            return f"which embeds the IPv4 address {ipv4} ({kind}), {reason}"
        if kind in _TRANSLATING_KINDS:
            return None
    for network, category in _IPV6_SPECIAL:
        if address in network:
            return f"a {category} address"
    # is_reserved too: is_global says nothing of the unassigned space outside 2000::/3.
    if not address.is_global or address.is_reserved:
        return "a reserved address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE:
        return "IPv4-compatible", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        # Teredo is refused as reserved anyway; naming the client only sharpens the message.
        return "Teredo", address.teredo[1]
    return None
