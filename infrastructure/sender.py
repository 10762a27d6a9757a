"""One webhook delivery attempt over HTTP, reported as an ``Outcome`` and never raised.

Lives here: ``Request`` (what to send), ``Outcome`` (what happened), ``ErrorClass`` (the
fixed vocabulary of failures), ``Sender`` (performs an attempt), ``pinned_pool`` (the
httpcore connection pool that connects only to addresses the SSRF guard vetted) and
``PinnedTransport`` (the same pool as an httpx transport).

Usage::

    sender = Sender(guard, user_agent="webround-webhooks/0.1.0")
    outcome = sender.send(Request(url=url, body=body, headers=headers, timeout_seconds=15))
    if outcome.succeeded: ...
    sender.close()

What one ``send`` does:

1. ``TargetGuard.resolve_for_send`` resolves the host afresh and vets every address
   (SSRF, against DNS rebinding). A refusal is ``unsafe_target``; nothing is sent.
2. It connects only to those vetted addresses, in the resolver's order (the next one is
   tried when one refuses; each gets an equal share of the time left). The name is never
   resolved again: the pinned pool has no DNS at all. The URL keeps the host *name*,
   so the ``Host`` header, TLS SNI, certificate verification and the keep-alive pool
   are all keyed by the name, as with any client. (Rewriting the URL to the IP with an
   ``sni_hostname`` extension was rejected: httpcore pools connections by URL origin
   only, so a TLS connection opened and verified for ``a.example`` would be reused for
   ``b.example`` on the same IP without checking b's certificate.)
3. The whole attempt (waiting for a pooled connection, connect, TLS, sending, the
   response headers and up to 16 KiB of body) ends by ``timeout_seconds`` after it
   started: every socket operation's timeout is clamped to the time left. A receiver
   that trickles bytes cannot hold a worker longer. Only the DNS lookup of step 1 is
   not bounded (getaddrinfo has no timeout), though the time it takes counts.
4. A 3xx is the failure ``redirect`` and is never followed. Any other status is
   reported as is (``error`` None); a 2xx is success.
5. At most 16 KiB of the response body is read; then the connection is closed rather
   than drained, so a 1 GB answer costs 16 KiB. The body is asked for and read without
   content coding (``accept-encoding: identity``), so no decompression bomb is inflated.
   Once the status line and headers have arrived in time, the receiver has answered:
   a body that then stalls or breaks keeps the status and is noted in ``detail``.
   The excerpt is kept as text when it is UTF-8 without NUL, else as base64 of its exact
   bytes (``response_body_encoding``; `domain.delivery.storable_excerpt`): a gzip,
   binary or NUL-bearing answer is recorded faithfully and every store can hold it.
   Header values are text as httpx decodes them (UTF-8, else ISO-8859-1: each byte one
   character, nothing lost); HTTP parsing never lets a NUL into one.

Error classes (``Outcome.error``; ``None`` when the receiver answered with a non-3xx
status, whatever it was):

``unsafe_target``   the SSRF guard refused the target at send time; nothing was sent.
``dns_error``       the host did not resolve (or resolved to something not an address).
``invalid_request`` the URL or a header could not be used at all (a non-ASCII value, a
                    line break in a value); no request was sent.
``connect_error``   no TCP connection to any vetted address (refused, unreachable...).
``tls_error``       the TLS handshake failed (bad or untrusted certificate, a plain-HTTP
                    port spoken to in TLS...).
``timeout``         the time limit ran out before the response headers arrived.
``protocol_error``  connected, but the exchange broke before a complete response head:
                    connection closed or reset, malformed HTTP.
``redirect``        the receiver answered 3xx (``status_code`` and ``location`` kept).

``detail`` carries a human-readable explanation for every error class.

Thread safety: one ``Sender`` (and its one keep-alive pool) serves any number of worker
threads at once. The vetted addresses and the deadline of an attempt travel to the
network backend in a thread-local, which is sound because httpcore's synchronous pool
opens a connection in the thread of the request that will use it.

Nothing here does I/O at import time.
"""

from __future__ import annotations

import email.utils
import functools
import math
import re
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias, get_args
from urllib.parse import urlsplit

import httpcore
import httpx

from application.errors import InvalidRequest, UnsafeTarget
from domain.delivery import BodyEncoding, storable_excerpt
from infrastructure.ssrf import IPAddress, ParsedTarget, TargetGuard

__all__ = [
    "ERROR_CLASSES",
    "MAX_RESPONSE_BODY_BYTES",
    "RESPONSE_HEADERS_OF_INTEREST",
    "ErrorClass",
    "Outcome",
    "PinnedTransport",
    "Request",
    "Sender",
    "pinned_pool",
]

ErrorClass: TypeAlias = Literal[
    "unsafe_target",
    "dns_error",
    "invalid_request",
    "connect_error",
    "tls_error",
    "timeout",
    "protocol_error",
    "redirect",
]
ERROR_CLASSES: Final[frozenset[str]] = frozenset(get_args(ErrorClass))

MAX_RESPONSE_BODY_BYTES: Final = 16 * 1024
RESPONSE_HEADERS_OF_INTEREST: Final = (
    "content-type",
    "content-length",
    "retry-after",
    "server",
    "date",
    "x-request-id",
    "location",
)
_MAX_HEADER_VALUE_CHARS: Final = 1024
# Framing and transport headers are ours to set; a caller's (a merchant's custom
# headers) would break the request or smuggle a second one.
_RESERVED_REQUEST_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Request:
    """One POST to send: ``body`` goes out byte for byte, ``headers`` as given.

    ``headers`` already hold the signature and our ``webround-*`` headers (the caller
    builds them). ``host``, ``content-length``, ``transfer-encoding``, ``connection``
    and ``accept-encoding`` are set by the sender and ignored here.
    """

    url: str
    body: bytes
    headers: dict[str, str]
    timeout_seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_seconds) and self.timeout_seconds > 0):
            raise ValueError("timeout_seconds must be a positive number of seconds")


@dataclass(frozen=True)
class Outcome:
    """What one attempt did: a status code, or an error class, and the evidence."""

    status_code: int | None
    error: ErrorClass | None
    detail: str | None
    started_at: datetime  # UTC
    duration_ms: float
    response_headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    response_body: str = ""  # first 16 KiB: the text, or base64 of the bytes (see below)
    retry_after_seconds: float | None = None  # only for 429 and 503
    response_body_encoding: BodyEncoding = "text"  # "base64": not UTF-8, or holds a NUL

    @property
    def succeeded(self) -> bool:
        """A 2xx answer: the one kind of success (SPEC §6)."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


# --- DNS pinning and the attempt deadline, at the socket level ---------------------------


@dataclass(frozen=True)
class _Attempt:
    addresses: tuple[IPAddress, ...]
    deadline: float  # time.monotonic()


_current = threading.local()


def _attempt() -> _Attempt | None:
    attempt: _Attempt | None = getattr(_current, "attempt", None)
    return attempt


def _time_left(timeout: float | None, expired: type[Exception], share: int = 1) -> float | None:
    """``timeout`` clamped to the current attempt's time left (divided by ``share``)."""
    attempt = _attempt()
    if attempt is None:
        return timeout
    left = attempt.deadline - time.monotonic()
    if left <= 0:
        raise expired("the attempt's time limit ran out")
    left /= share
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(
                ssl_context, server_hostname, _time_left(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the current attempt's vetted addresses; never resolves a name."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        attempt = _attempt()
        if attempt is None or not attempt.addresses:
            # Fail closed: outside Sender.send there is no vetted address to go to.
            raise httpcore.ConnectError(
                f"refusing to connect to {host}: no address vetted by the SSRF guard"
            )
        failures: list[str] = []
        last: Exception | None = None
        for index, address in enumerate(attempt.addresses):
            share = len(attempt.addresses) - index
            try:
                stream = self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=_time_left(timeout, httpcore.ConnectTimeout, share),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failures.append(f"{_host_port(address, port)} ({exc or type(exc).__name__})")
                last = exc
                continue
            return _DeadlineStream(stream)
        if last is None:  # unreachable: at least one address was tried
            raise httpcore.ConnectError(f"no address to connect to for {host}")
        message = f"could not connect to {host}: " + "; ".join(failures)
        raise type(last)(message) from last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are never sent over Unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """An ``httpx.HTTPTransport`` that connects only to addresses vetted by ``Sender``.

    Outside ``Sender.send`` every connection attempt fails. HTTP/1.1 only, no proxies,
    no environment (``trust_env`` off). ``verify``: True (system CAs) or an
    ``ssl.SSLContext`` (a private CA, in tests). ``Sender`` itself drives the same
    pinned connection pool (``pinned_pool``) without httpx's client layers.
    """

    def __init__(
        self,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        if limits is None:
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            # httpx keeps its pool in `_pool`; if a new httpx moves it, refuse to run
            # unpinned rather than silently resolving names again.
            raise RuntimeError("this httpx version has no HTTPTransport._pool to pin")
        self._pool.close()
        self._pool = pinned_pool(ssl_context, limits)


def pinned_pool(ssl_context: ssl.SSLContext, limits: httpx.Limits) -> httpcore.ConnectionPool:
    """An HTTP/1.1 keep-alive pool whose only way out is the current attempt's vetted
    addresses (``_PinnedBackend``): no DNS, no proxies, no retries."""
    return httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=_PinnedBackend(),
    )


# --- the sender ---------------------------------------------------------------------------

# What httpx's Client would add to every request of ours: we send the same head.
_ACCEPT: Final = (b"Accept", b"*/*")
_KEEP_ALIVE: Final = (b"Connection", b"keep-alive")
_IDENTITY: Final = (b"accept-encoding", b"identity")
# Everything a Sender may raise from the pool apart from timeouts, connect errors and a
# request h11 refused (`httpcore.LocalProtocolError`, caught before these).
_TRANSPORT_ERRORS: Final = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
_HEADERS_OF_INTEREST: Final = frozenset(name.encode() for name in RESPONSE_HEADERS_OF_INTEREST)


class Sender:
    """Performs delivery attempts; ``send`` reports and never raises for the network.

    One HTTP/1.1 keep-alive pool (httpcore's, pinned: ``pinned_pool``) serves every
    thread. ``max_connections`` should be at least the number of threads calling
    ``send``, or attempts wait for a free connection (that wait counts toward their
    timeout). ``max_keepalive_connections`` defaults to ``max_connections``: httpcore
    (1.0) counts *every* connection of the pool against that limit, not only the idle
    ones, so with more attempts in flight than the limit it would close each connection
    as soon as it fell idle and open a new one (a TLS handshake) for the next attempt.
    Idle connections still close after 5 s unused.

    The request goes straight to httpcore's pool rather than through an
    ``httpx.Client``: the bytes on the wire are those the client sent (the same header
    list, in the same order), but the client's layers (auth and redirect generators, a
    cookie jar, URL and header objects built afresh for every request) cost about a
    third of the CPU of sending. One thing the client did is gone on purpose: it kept
    cookies set by one receiver and sent them back on later attempts to the same host,
    whoever's webhook they were; attempts now never carry cookies.
    """

    def __init__(
        self,
        guard: TargetGuard,
        user_agent: str,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 100,
        max_keepalive_connections: int | None = None,
    ) -> None:
        self._guard = guard
        self._user_agent = user_agent
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=(
                max_connections if max_keepalive_connections is None else max_keepalive_connections
            ),
        )
        self._pool = pinned_pool(httpx.create_ssl_context(verify=verify, trust_env=False), limits)

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._pool.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, request: Request) -> Outcome:
        """POST ``request`` once and report what happened."""
        started_at = datetime.now(UTC)
        start = time.monotonic()
        deadline = start + request.timeout_seconds

        def failed(error: ErrorClass, detail: str) -> Outcome:
            return Outcome(
                status_code=None,
                error=error,
                detail=_storable(detail),
                started_at=started_at,
                duration_ms=(time.monotonic() - start) * 1000,
            )

        try:
            target = self._guard.resolve_for_send(request.url)
        except UnsafeTarget as exc:
            return failed("unsafe_target", str(exc))
        except InvalidRequest as exc:
            # The guard raises InvalidRequest (never UnsafeTarget) for a failed lookup,
            # and also for a URL it cannot parse; only the first is worth retrying.
            message = str(exc)
            if " does not resolve to any address" in message or " resolved to " in message:
                return failed("dns_error", message)
            return failed("invalid_request", message)

        try:
            http_request = self._build(request, target)
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
            return failed("invalid_request", f"the request could not be built: {exc}")

        previous = _attempt()
        _current.attempt = _Attempt(addresses=target.addresses, deadline=deadline)
        try:
            try:
                response = self._pool.handle_request(http_request)
            except httpcore.TimeoutException as exc:
                return failed("timeout", _describe_timeout(exc, request.timeout_seconds))
            except httpcore.ConnectError as exc:
                tls = _ssl_error(exc)
                if tls is not None:
                    return failed("tls_error", f"TLS handshake failed: {tls}")
                return failed("connect_error", _message(exc))
            except httpcore.LocalProtocolError as exc:
                # h11 refused to write what we asked for (a header value with a line
                # break, say): our request is at fault, and not a byte of it went out.
                return failed("invalid_request", f"the request could not be sent: {exc}")
            except _TRANSPORT_ERRORS as exc:
                tls = _ssl_error(exc)
                if tls is not None:
                    return failed("tls_error", f"TLS failed: {tls}")
                return failed("protocol_error", f"{type(exc).__name__}: {_message(exc)}")
            try:
                excerpt, cut, body_problem = _read_excerpt(response)
            finally:
                response.close()
        finally:
            _current.attempt = previous

        status = response.status
        received = _headers_received(response.headers)
        headers = {name: value[:_MAX_HEADER_VALUE_CHARS] for name, value in received.items()}
        error: ErrorClass | None = None
        detail = body_problem
        if 300 <= status < 400:
            error = "redirect"
            location = headers.get("location")
            detail = (
                f"the receiver answered {status}"
                + (f" redirecting to {location}" if location else "")
                + "; redirects are never followed, the endpoint URL must answer itself"
            )
        retry_after = None
        if status in _RETRY_AFTER_STATUSES and "retry-after" in received:
            retry_after = _retry_after_seconds(
                received["retry-after"], received.get("date"), started_at
            )
        body, encoding = storable_excerpt(excerpt, cut=cut)
        return Outcome(
            status_code=status,
            error=error,
            detail=_storable(detail) if detail is not None else None,
            started_at=started_at,
            duration_ms=(time.monotonic() - start) * 1000,
            response_headers=headers,
            response_body=body,
            retry_after_seconds=retry_after,
            response_body_encoding=encoding,
        )

    def _build(self, request: Request, target: ParsedTarget) -> httpcore.Request:
        """The POST as httpx's client would have made it: ``Host``, its defaults
        (``Accept``, ``Connection``), our user agent, the caller's headers but the
        reserved ones, ``accept-encoding: identity`` and ``Content-Length``."""
        url, host = _http_url(request.url, target.scheme, target.host, target.port)
        given = {"user-agent": self._user_agent}
        for name, value in request.headers.items():
            if name.lower() not in _RESERVED_REQUEST_HEADERS:
                given[name] = value
        headers = [(b"Host", host)]
        if not any(name.lower() == "accept" for name in given):
            headers.append(_ACCEPT)
        headers.append(_KEEP_ALIVE)
        # A header no HTTP/1.1 request may carry as text raises UnicodeEncodeError here.
        headers += [(name.encode("ascii"), value.encode("ascii")) for name, value in given.items()]
        headers.append(_IDENTITY)
        headers.append((b"Content-Length", str(len(request.body)).encode("ascii")))
        limit = request.timeout_seconds
        timeout = {"connect": limit, "read": limit, "write": limit, "pool": limit}
        return httpcore.Request(
            b"POST", url, headers=headers, content=request.body, extensions={"timeout": timeout}
        )


@functools.lru_cache(maxsize=1024)
def _http_url(url: str, scheme: str, host: str, port: int) -> tuple[httpcore.URL, bytes]:
    """The pool's URL for ``url`` as the guard read it (host name or IP, port), and the
    ``Host`` header: parsed and percent-encoded by ``httpx.URL`` once per URL, not per
    attempt (the addresses to connect to are never part of it: they are pinned per
    attempt). Raises ``httpx.InvalidURL`` for a URL httpx would not send."""
    parsed = httpx.URL(_pinnable_url(url, scheme, host, port))
    pool_url = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    return pool_url, parsed.netloc


def _pinnable_url(url: str, scheme: str, host: str, port: int) -> str:
    """``url`` with the host as the guard read it (canonical name or IP) and its port.

    Path and query stay as written; the fragment is dropped. Whatever httpx would make
    of the original spelling, it then names the host the guard vetted.
    """
    parts = urlsplit(url)
    host = f"[{host}]" if ":" in host else host
    default_port = 443 if scheme == "https" else 80
    netloc = host if port == default_port else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


def _read_excerpt(response: httpcore.Response) -> tuple[bytes, bool, str | None]:
    """At most 16 KiB of the body, whether the body went on past them (or broke off),
    and why reading stopped early, if it broke."""
    received = bytearray()
    problem: str | None = None
    complete = True
    try:
        for chunk in response.iter_stream():
            received += chunk
            if len(received) >= MAX_RESPONSE_BODY_BYTES:
                complete = len(received) == MAX_RESPONSE_BODY_BYTES and _at_end(response)
                break
    except httpcore.TimeoutException:
        problem = "the response body was still arriving when the time limit ran out"
        complete = False
    except (httpcore.LocalProtocolError, *_TRANSPORT_ERRORS) as exc:
        problem = f"reading the response body failed: {_message(exc)}"
        complete = False
    return bytes(received[:MAX_RESPONSE_BODY_BYTES]), not complete, problem


def _at_end(response: httpcore.Response) -> bool:
    length = _headers_received(response.headers).get("content-length")
    return length is not None and length.isdigit() and int(length) == MAX_RESPONSE_BODY_BYTES


def _headers_received(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The response headers of interest, whole, by lower-case name, in the order of
    ``RESPONSE_HEADERS_OF_INTEREST``; a repeated header's values joined by ``, ``. Text
    as httpx decodes it: UTF-8 when every header is, else ISO-8859-1."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in raw:
        key = name.lower()
        if key in _HEADERS_OF_INTEREST:
            found.setdefault(key, []).append(value)
    if not found:
        return {}
    encoding = "utf-8"
    try:
        for name, value in raw:
            name.decode(encoding)
            value.decode(encoding)
    except UnicodeDecodeError:
        encoding = "iso-8859-1"
    return {
        name: b", ".join(found[key]).decode(encoding)
        for name in RESPONSE_HEADERS_OF_INTEREST
        if (key := name.encode("ascii")) in found
    }


def _retry_after_seconds(value: str, date: str | None, now: datetime) -> float | None:
    """Seconds to wait per ``Retry-After`` (delay-seconds or an HTTP-date), or None.

    An HTTP-date is measured from the response's own ``Date`` when it has a valid one
    (so the receiver's clock skew cancels out), else from ``now``. Never negative; the
    caller clamps the upper end.
    """
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(date) if date is not None else None
    return max(0.0, (when - (reference or now)).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 9110
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _storable(detail: str) -> str:
    """``detail`` with any NUL written as ``\\x00``: details quote exceptions, which may
    quote what a receiver sent, and every store must hold them."""
    return detail.replace("\x00", "\\x00")


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _message(exc: BaseException) -> str:
    text = str(exc)
    if text:
        return text
    cause = exc.__cause__ or exc.__context__
    return _message(cause) if cause is not None else type(exc).__name__


def _describe_timeout(exc: httpcore.TimeoutException, limit: float) -> str:
    phase = {
        httpcore.ConnectTimeout: "connecting",
        httpcore.WriteTimeout: "sending the request",
        httpcore.ReadTimeout: "waiting for the response",
        httpcore.PoolTimeout: "waiting for a free connection",
    }.get(type(exc), "the attempt")
    return f"no response within {limit:g} s (timed out {phase})"


def _host_port(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
