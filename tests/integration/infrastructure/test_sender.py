"""One delivery attempt over real HTTP (SPEC §3 SSRF at send time, §5 headers, §6 outcomes).

Every test talks to a real server on 127.0.0.1: the uvicorn ``Receiver`` of
``tests/support/receiver.py``, or a ``RawServer`` where the test needs bytes no HTTP
server would write. Host names such as ``hooks.test`` exist only in the fake resolvers
handed to the guard, so a request that reaches the receiver through one proves the
sender connected to the vetted address and never asked the system DNS.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import gzip
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import standardwebhooks
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infrastructure.secrets import SigningSecret
from infrastructure.sender import (
    ERROR_CLASSES,
    MAX_RESPONSE_BODY_BYTES,
    Outcome,
    PinnedTransport,
    Request,
    Sender,
)
from infrastructure.signing import signature_headers
from infrastructure.ssrf import TargetGuard, parse_allowed_targets
from tests.support.receiver import RawServer, Receiver, RecordedRequest, Reply, free_port

USER_AGENT = "webround-webhooks/test"
BODY = b'{"eventType":"order.paid","data":{"note":"caf\xc3\xa9"}}'
LOOPBACK = parse_allowed_targets("127.0.0.0/8")


class FakeResolver:
    """Answers from a table, one answer per call (the last one repeats); counts calls."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self._answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self._answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self._answers[host]
        return list(answers[min(len(self.calls) - 1, len(answers) - 1)])


def post(url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> Request:
    return Request(
        url=url,
        body=BODY,
        headers={"content-type": "application/json", **(headers or {})},
        timeout_seconds=timeout,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def sender() -> Iterator[Sender]:
    with Sender(TargetGuard(allowed_networks=LOOPBACK, allow_http=True), USER_AGENT) as built:
        yield built


def sender_with(resolver: FakeResolver, verify: ssl.SSLContext | bool = True) -> Sender:
    guard = TargetGuard(allowed_networks=LOOPBACK, allow_http=True, resolver=resolver)
    return Sender(guard, USER_AGENT, verify=verify)


def assert_failed(outcome: Outcome, error: str) -> None:
    assert outcome.error == error, outcome
    assert error in ERROR_CLASSES
    assert not outcome.succeeded
    assert outcome.detail


# --- success and what the receiver gets -------------------------------------------------


def test_a_2xx_is_success_and_the_receiver_gets_the_exact_bytes_and_headers(
    receiver: Receiver, sender: Sender
) -> None:
    # Given a receiver answering 200 with a few headers, only some of interest
    receiver.behaviour = Reply(
        status=200,
        headers={"content-type": "text/plain", "x-request-id": "req-42", "x-other": "no"},
        body=b"thanks",
    )

    # When we send a body with our headers
    before = datetime.now(UTC)
    outcome = sender.send(post(receiver.url, headers={"webround-event-type": "order.paid"}))

    # Then the attempt succeeded and reports what came back
    assert outcome.succeeded
    assert (outcome.status_code, outcome.error, outcome.detail) == (200, None, None)
    assert outcome.response_body == "thanks"
    assert outcome.response_headers == {
        "content-type": "text/plain",
        "content-length": "6",
        "x-request-id": "req-42",
    }
    assert outcome.retry_after_seconds is None
    assert outcome.started_at.tzinfo is UTC
    assert before <= outcome.started_at <= datetime.now(UTC)
    assert 0 < outcome.duration_ms < 5000
    # And the receiver got the body byte for byte, our headers, and the real Host
    [(method, path, headers, body)] = receiver.requests
    assert (method, path, body) == ("POST", "/", BODY)
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert headers["user-agent"] == USER_AGENT
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(BODY))
    assert headers["webround-event-type"] == "order.paid"
    assert headers["accept-encoding"] == "identity"


def test_the_path_and_query_are_sent_as_written(receiver: Receiver, sender: Sender) -> None:
    # Given an endpoint URL with a path and a query string
    url = f"http://127.0.0.1:{receiver.port}/hooks/webround?token=a%2Fb&x=1#fragment"

    # When we send to it
    outcome = sender.send(post(url))

    # Then the receiver sees that path and query, and no fragment
    assert outcome.succeeded
    assert receiver.requests[0].path == "/hooks/webround?token=a%2Fb&x=1"


def test_framing_headers_from_the_caller_are_ignored(receiver: Receiver, sender: Sender) -> None:
    # Given custom headers that try to set the host and the framing
    headers = {
        "Host": "evil.example",
        "Content-Length": "1",
        "Transfer-Encoding": "chunked",
        "User-Agent": "custom/1.0",
    }

    # When we send
    outcome = sender.send(post(receiver.url, headers=headers))

    # Then the host and framing are ours and the body arrives whole; other headers pass
    assert outcome.succeeded
    [recorded] = receiver.requests
    assert recorded.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert recorded.headers["content-length"] == str(len(BODY))
    assert "transfer-encoding" not in recorded.headers
    assert recorded.headers["user-agent"] == "custom/1.0"
    assert recorded.body == BODY


def test_the_request_head_is_the_one_an_http_client_sends(sender: Sender) -> None:
    # Given a server that keeps the request head it receives
    heads: list[bytes] = []

    def keep(connection: socket.socket, stopping: threading.Event) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            received += connection.recv(65536)
        heads.append(received.split(b"\r\n\r\n")[0])
        connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    with RawServer(keep) as server:
        # When we send with a custom header, to a path with non-ASCII characters
        outcome = sender.send(post(server.url + "caf\u00e9?q=1", headers={"x-custom": "1"}))

    # Then the head is what httpx's client sent before: the same lines, in this order
    assert outcome.status_code == 204
    assert heads[0].split(b"\r\n") == [
        b"POST /caf%C3%A9?q=1 HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}".encode(),
        b"Accept: */*",
        b"Connection: keep-alive",
        f"user-agent: {USER_AGENT}".encode(),
        b"content-type: application/json",
        b"x-custom: 1",
        b"accept-encoding: identity",
        f"Content-Length: {len(BODY)}".encode(),
    ]


def test_a_cookie_set_by_a_receiver_is_never_sent_back(receiver: Receiver, sender: Sender) -> None:
    # Given a receiver that sets a cookie
    receiver.behaviour = Reply(status=200, headers={"set-cookie": "session=abc; Path=/"})

    # When we send to it twice
    outcomes = [sender.send(post(receiver.url)), sender.send(post(receiver.url))]

    # Then no attempt carried the cookie: attempts share no state through the receiver
    assert all(outcome.succeeded for outcome in outcomes)
    assert [request.headers.get("cookie") for request in receiver.requests] == [None, None]


def test_repeated_and_non_utf8_response_headers_are_read_as_text(sender: Sender) -> None:
    # Given a server answering a header twice, and one value in ISO-8859-1
    def respond(connection: socket.socket, stopping: threading.Event) -> None:
        connection.recv(65536)
        connection.sendall(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nX-Request-Id: a\r\n"
            b"Server: caf\xe9\r\nx-request-id: b\r\nRetry-After: 3\r\nRetry-After: 9\r\n\r\nno"
        )

    with RawServer(respond) as server:
        # When we send
        outcome = sender.send(post(server.url))

    # Then repeated values are joined, the odd byte is read as ISO-8859-1, and a repeated
    # Retry-After is no delay we can read
    assert outcome.response_headers == {
        "content-length": "2",
        "retry-after": "3, 9",
        "server": "caf\u00e9",
        "x-request-id": "a, b",
    }
    assert outcome.response_body == "no"
    assert outcome.retry_after_seconds is None


@pytest.mark.parametrize("rotating", [False, True], ids=["one secret", "during rotation"])
def test_a_standard_webhooks_library_verifies_our_signature(
    receiver: Receiver, sender: Sender, rotating: bool
) -> None:
    # Given a receiver that verifies with the standardwebhooks library and its secret
    current, previous = SigningSecret.generate(), SigningSecret.generate()
    secrets = [current, previous] if rotating else [current]
    verified: list[object] = []

    def verify(request: RecordedRequest) -> Reply:
        for secret in secrets:
            try:
                verified.append(
                    standardwebhooks.Webhook(secret.reveal()).verify(request.body, request.headers)
                )
            except standardwebhooks.WebhookVerificationError:
                return Reply(status=401, body=b"bad signature")
        return Reply(status=204)

    receiver.behaviour = verify

    # When we send a request signed with signature_headers
    signed = signature_headers(
        secrets=secrets, msg_id="evt_01J9Z", timestamp=int(time.time()), body=BODY
    )
    outcome = sender.send(post(receiver.url, headers=signed))

    # Then every secret verifies the very bytes that arrived
    assert outcome.status_code == 204
    assert outcome.succeeded
    assert len(verified) == len(secrets)


# --- failures reported by the receiver ---------------------------------------------------


def test_a_500_is_reported_with_its_body(receiver: Receiver, sender: Sender) -> None:
    # Given a receiver that fails
    receiver.behaviour = Reply(status=500, body=b"Internal Server Error: db down")

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the status and body excerpt are recorded; it is a failure without error class
    assert (outcome.status_code, outcome.error) == (500, None)
    assert not outcome.succeeded
    assert outcome.response_body == "Internal Server Error: db down"


def test_a_large_body_is_cut_to_16_kib_without_a_broken_character(
    receiver: Receiver, sender: Sender
) -> None:
    # Given a 1 MiB UTF-8 answer whose 16 KiB boundary falls inside a two-byte character
    body = b"a" + "é".encode() * (512 * 1024)
    receiver.behaviour = Reply(status=200, body=body[: 1024 * 1024])

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then only the first 16 KiB are kept, and the half character is dropped
    assert outcome.succeeded
    assert MAX_RESPONSE_BODY_BYTES == 16 * 1024
    assert outcome.response_body == "a" + "é" * 8191
    assert "\ufffd" not in outcome.response_body
    assert outcome.response_headers["content-length"] == str(1024 * 1024)


def test_a_huge_body_is_not_downloaded(receiver: Receiver, sender: Sender) -> None:
    # Given a receiver ready to stream 1 GiB to whoever keeps reading
    receiver.behaviour = Reply(status=200, stream_bytes=1024**3)

    # When we send
    started = time.monotonic()
    outcome = sender.send(post(receiver.url))
    elapsed = time.monotonic() - started

    # Then we kept 16 KiB and hung up: the receiver streamed a tiny part of it
    assert outcome.succeeded
    assert outcome.response_body == "x" * MAX_RESPONSE_BODY_BYTES
    assert elapsed < 3
    time.sleep(0.2)
    assert receiver.streamed_bytes < 64 * 1024**2


def test_a_text_answer_is_kept_as_text(receiver: Receiver, sender: Sender) -> None:
    # Given an answer in UTF-8, control characters other than NUL included
    receiver.behaviour = Reply(status=400, body="bad input: \x1b[31mZoë\x7f".encode())

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the excerpt is that text, marked as text
    assert outcome.response_body == "bad input: \x1b[31mZoë\x7f"
    assert outcome.response_body_encoding == "text"


@pytest.mark.parametrize(
    "body",
    [
        b"bad \xff\xfe input",  # not UTF-8
        b"ok\x00then binary",  # UTF-8, with a NUL (which PostgreSQL text cannot hold)
        gzip.compress(b'{"ok": true}'),  # a compressed answer sent despite identity
    ],
    ids=["not-utf8", "nul", "gzip"],
)
def test_an_answer_that_is_no_storable_text_is_kept_as_base64_of_its_bytes(
    receiver: Receiver, sender: Sender, body: bytes
) -> None:
    # Given an answer whose bytes are no text every store can hold
    receiver.behaviour = Reply(status=400, body=body)

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the excerpt is base64 of exactly those bytes, marked as such: nothing replaced,
    # nothing a store would refuse
    assert outcome.response_body_encoding == "base64"
    assert base64.b64decode(outcome.response_body) == body
    assert outcome.response_body.isascii()


def test_a_redirect_is_a_failure_and_is_not_followed(receiver: Receiver, sender: Sender) -> None:
    # Given a receiver that redirects to another path of itself
    elsewhere = f"http://127.0.0.1:{receiver.port}/elsewhere"
    receiver.behaviour = Reply(status=302, headers={"location": elsewhere}, body=b"moved")

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the attempt failed as a redirect and the target was never called
    assert_failed(outcome, "redirect")
    assert outcome.status_code == 302
    assert outcome.response_headers["location"] == elsewhere
    assert elsewhere in (outcome.detail or "")
    assert [request.path for request in receiver.requests] == ["/"]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_read_on_429_and_503(
    receiver: Receiver, sender: Sender, status: int
) -> None:
    # Given a receiver asking us to come back in 7 seconds
    receiver.behaviour = Reply(status=status, headers={"retry-after": "7"})

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the wait is reported
    assert outcome.status_code == status
    assert outcome.retry_after_seconds == 7.0
    assert outcome.response_headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_as_an_http_date_counts_from_the_receivers_date(
    receiver: Receiver, sender: Sender, status: int
) -> None:
    # Given a receiver whose clock is an hour off, asking for two minutes from its now
    their_now = datetime.now(UTC) - dt.timedelta(hours=1)
    receiver.behaviour = Reply(
        status=status,
        headers={
            "date": email.utils.format_datetime(their_now, usegmt=True),
            "retry-after": email.utils.format_datetime(
                their_now + dt.timedelta(seconds=120), usegmt=True
            ),
        },
    )

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the wait is those two minutes, whatever their clock says
    assert outcome.retry_after_seconds == 120.0


def test_retry_after_as_an_http_date_without_a_date_counts_from_our_clock(
    receiver: Receiver, sender: Sender
) -> None:
    # Given a 503 asking for a minute from now, without a Date header
    later = datetime.now(UTC) + dt.timedelta(seconds=60)
    receiver.behaviour = Reply(
        status=503, headers={"retry-after": email.utils.format_datetime(later, usegmt=True)}
    )

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then the wait is about a minute
    assert outcome.retry_after_seconds is not None
    assert 55 <= outcome.retry_after_seconds <= 61


@pytest.mark.parametrize(
    ("status", "value"), [(500, "7"), (429, "soon"), (429, "-3")], ids=["not 429", "junk", "neg"]
)
def test_retry_after_is_ignored_where_it_does_not_apply(
    receiver: Receiver, sender: Sender, status: int, value: str
) -> None:
    # Given a Retry-After on a status it does not belong to, or one that is no delay
    receiver.behaviour = Reply(status=status, headers={"retry-after": value})

    # When we send
    outcome = sender.send(post(receiver.url))

    # Then no wait is reported
    assert outcome.retry_after_seconds is None


# --- failures of the network ---------------------------------------------------------------


def test_a_slow_receiver_times_out_at_the_time_limit(receiver: Receiver, sender: Sender) -> None:
    # Given a receiver that answers only after 3 s
    receiver.behaviour = Reply(status=200, delay=3)

    # When we send with a 1 s limit
    outcome = sender.send(post(receiver.url, timeout=1))

    # Then the attempt is a timeout that took about the limit
    assert_failed(outcome, "timeout")
    assert outcome.status_code is None
    assert 900 <= outcome.duration_ms < 2500


def test_a_receiver_trickling_its_answer_cannot_outlast_the_time_limit(sender: Sender) -> None:
    # Given a server that writes its status line one byte every 0.2 s, forever
    def trickle(connection: socket.socket, stopping: threading.Event) -> None:
        connection.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 10_000:
            if stopping.wait(0.2):
                return
            connection.sendall(bytes([byte]))

    with RawServer(trickle) as server:
        # When we send with a 1 s limit (no single read ever waits 1 s)
        outcome = sender.send(post(server.url, timeout=1))

    # Then the whole attempt still ends at the limit
    assert_failed(outcome, "timeout")
    assert outcome.duration_ms < 2500


def test_a_body_stalling_after_a_2xx_keeps_the_success(sender: Sender) -> None:
    # Given a server that answers 200 with part of the promised body, then stalls
    def stall(connection: socket.socket, stopping: threading.Event) -> None:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nreceived")
        stopping.wait(10)

    with RawServer(stall) as server:
        # When we send with a 1 s limit
        outcome = sender.send(post(server.url, timeout=1))

    # Then the receiver's verdict stands, with what arrived and a note on the rest
    assert outcome.succeeded
    assert outcome.response_body == "received"
    assert "time limit" in (outcome.detail or "")
    assert outcome.duration_ms < 2500


def test_a_closed_port_is_a_connect_error(sender: Sender) -> None:
    # Given a port nothing listens on
    url = f"http://127.0.0.1:{free_port()}/"

    # When we send
    outcome = sender.send(post(url))

    # Then the attempt failed to connect, saying so
    assert_failed(outcome, "connect_error")
    assert outcome.status_code is None
    assert "refused" in (outcome.detail or "").lower()


@pytest.mark.parametrize(
    "answer",
    [
        b"HELLO THERE\r\n\r\n",
        b"",  # closes without a word
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
    ],
    ids=["garbage", "hang-up", "bad-header"],
)
def test_a_broken_answer_is_a_protocol_error(sender: Sender, answer: bytes) -> None:
    # Given a server that answers something that is not HTTP
    def respond(connection: socket.socket, stopping: threading.Event) -> None:
        connection.recv(65536)
        connection.sendall(answer)

    with RawServer(respond) as server:
        # When we send
        outcome = sender.send(post(server.url))

    # Then the attempt is a protocol error
    assert_failed(outcome, "protocol_error")


def test_https_to_a_plain_http_port_is_an_error_not_an_exception(receiver: Receiver) -> None:
    # Given an https URL whose port speaks plain HTTP
    url = f"https://127.0.0.1:{receiver.port}/"
    guard = TargetGuard(allowed_networks=LOOPBACK)

    # When we send
    with Sender(guard, USER_AGENT) as sender:
        outcome = sender.send(post(url))

    # Then it is reported as a failed attempt (the handshake fails)
    assert outcome.error in {"tls_error", "protocol_error", "connect_error"}
    assert outcome.error == "tls_error"
    assert not outcome.succeeded
    assert receiver.requests == []


@pytest.mark.parametrize(
    "headers",
    [{"x-custom": "line\r\nx-injected: 1"}, {"x-custom": "naïve"}],
    ids=["line break", "non-ascii"],
)
def test_an_unsendable_header_is_an_invalid_request(
    receiver: Receiver, sender: Sender, headers: dict[str, str]
) -> None:
    # Given a header value no HTTP/1.1 request may carry
    # When we send
    outcome = sender.send(post(receiver.url, headers=headers))

    # Then nothing reaches the receiver and the attempt says why
    assert_failed(outcome, "invalid_request")
    assert receiver.requests == []


def test_a_timeout_must_be_positive() -> None:
    # Given / When / Then a request without a usable time limit is a programming error
    with pytest.raises(ValueError, match="timeout_seconds"):
        post("http://127.0.0.1/", timeout=0)
    with pytest.raises(ValueError, match="timeout_seconds"):
        post("http://127.0.0.1/", timeout=float("nan"))


# --- SSRF at send time and DNS pinning ---------------------------------------------------------


def test_a_loopback_target_is_refused_without_an_allow_list(receiver: Receiver) -> None:
    # Given a guard with no allow-list, and a receiver on loopback
    with Sender(TargetGuard(allow_http=True), USER_AGENT) as sender:
        # When we send to it
        outcome = sender.send(post(receiver.url))

    # Then the target is refused and the receiver got nothing
    assert_failed(outcome, "unsafe_target")
    assert "loopback" in (outcome.detail or "")
    assert outcome.status_code is None
    assert receiver.requests == []


def test_the_sender_connects_to_the_vetted_address_under_the_host_name(
    receiver: Receiver,
) -> None:
    # Given a name only our resolver knows, pointing at the receiver
    resolver = FakeResolver({"hooks.test": [["127.0.0.1"]]})
    url = f"http://hooks.test:{receiver.port}/in?a=1"

    # When we send twice
    with sender_with(resolver) as sender:
        outcomes = [sender.send(post(url)), sender.send(post(url))]

    # Then both arrived, named by the host name, and the name was resolved once per attempt
    assert all(outcome.succeeded for outcome in outcomes)
    assert [request.headers["host"] for request in receiver.requests] == [
        f"hooks.test:{receiver.port}"
    ] * 2
    assert receiver.requests[0].path == "/in?a=1"
    assert resolver.calls == ["hooks.test", "hooks.test"]


def test_a_name_rebound_to_a_private_address_is_refused_without_connecting(
    receiver: Receiver,
) -> None:
    # Given a name that resolved to an allowed address, then to a private one
    resolver = FakeResolver({"hooks.test": [["127.0.0.1"], ["10.0.0.1"]]})
    url = f"http://hooks.test:{receiver.port}/"

    with sender_with(resolver) as sender:
        # When we send before and after the rebinding
        first = sender.send(post(url))
        second = sender.send(post(url, timeout=10))

    # Then the second is refused at once, and nothing else was contacted
    assert first.succeeded
    assert_failed(second, "unsafe_target")
    assert "10.0.0.1" in (second.detail or "")
    assert second.duration_ms < 1000
    assert len(receiver.requests) == 1


def test_the_next_vetted_address_is_tried_when_one_refuses(receiver: Receiver) -> None:
    # Given a name with two loopback addresses, the first with nothing listening
    # (the receiver is bound to 127.0.0.1 only)
    resolver = FakeResolver({"hooks.test": [["127.0.0.2", "127.0.0.1"]]})

    # When we send
    with sender_with(resolver) as sender:
        outcome = sender.send(post(f"http://hooks.test:{receiver.port}/"))

    # Then the second address took the request
    assert outcome.succeeded
    assert len(receiver.requests) == 1


def test_a_name_that_does_not_resolve_is_a_dns_error() -> None:
    # Given a resolver that knows no name
    resolver = FakeResolver({})

    # When we send
    with sender_with(resolver) as sender:
        outcome = sender.send(post("http://nowhere.test/"))

    # Then the attempt is a DNS error (worth retrying, unlike an unsafe target)
    assert_failed(outcome, "dns_error")
    assert "nowhere.test" in (outcome.detail or "")


def test_a_url_the_guard_cannot_read_is_an_invalid_request(sender: Sender) -> None:
    # Given / When a URL with an impossible port is sent
    outcome = sender.send(post("http://127.0.0.1:99999/"))

    # Then nothing is attempted
    assert_failed(outcome, "invalid_request")


# --- TLS: SNI and certificates by name, connections pooled by name -------------------------


def write_certificates(directory: Path, names: Sequence[str]) -> tuple[Path, Path, Path]:
    """A test CA, and a server certificate for ``names`` signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webround test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, ssl.SSLContext]]:
    """An HTTPS receiver whose certificate names only hooks.test, and a context trusting it."""
    ca_file, cert_file, key_file = write_certificates(tmp_path, ["hooks.test"])
    with Receiver(ssl_certfile=cert_file, ssl_keyfile=key_file) as running:
        yield running, ssl.create_default_context(cafile=str(ca_file))


def test_https_verifies_the_certificate_of_the_host_name(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
) -> None:
    # Given an HTTPS receiver for hooks.test reached through the vetted 127.0.0.1
    receiver, trust = tls_receiver
    resolver = FakeResolver({"hooks.test": [["127.0.0.1"]]})

    # When we send over https to the name
    with sender_with(resolver, verify=trust) as sender:
        outcome = sender.send(post(f"https://hooks.test:{receiver.port}/"))

    # Then TLS named hooks.test (SNI and verification) and the request went through
    assert outcome.succeeded, outcome
    assert receiver.requests[0].headers["host"] == f"hooks.test:{receiver.port}"


def test_an_untrusted_certificate_is_a_tls_error(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
) -> None:
    # Given the same receiver, but only the system's certificate authorities trusted
    receiver, _ = tls_receiver
    resolver = FakeResolver({"hooks.test": [["127.0.0.1"]]})

    # When we send
    with sender_with(resolver) as sender:
        outcome = sender.send(post(f"https://hooks.test:{receiver.port}/"))

    # Then the handshake failed and nothing was sent
    assert_failed(outcome, "tls_error")
    assert "certificate" in (outcome.detail or "").lower()
    assert receiver.requests == []


def test_a_connection_verified_for_one_name_is_never_reused_for_another(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
) -> None:
    # Given two names on the same address and port; the certificate covers only the first
    receiver, trust = tls_receiver
    resolver = FakeResolver({"hooks.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})

    with sender_with(resolver, verify=trust) as sender:
        # When we send to the first (leaving a kept-alive connection) and then the second
        first = sender.send(post(f"https://hooks.test:{receiver.port}/"))
        second = sender.send(post(f"https://other.test:{receiver.port}/"))

    # Then the second needed its own handshake, which failed on the certificate
    assert first.succeeded
    assert_failed(second, "tls_error")
    assert len(receiver.requests) == 1


# --- keep-alive and threads --------------------------------------------------------------------


def test_sequential_sends_reuse_one_connection(receiver: Receiver, sender: Sender) -> None:
    # Given / When five sends in a row to one receiver
    outcomes = [sender.send(post(receiver.url)) for _ in range(5)]

    # Then they all went over one kept-alive connection
    assert all(outcome.succeeded for outcome in outcomes)
    assert len(receiver.requests) == 5
    assert len(receiver.connections) == 1


def test_concurrent_sends_from_eight_threads_all_succeed(
    receiver: Receiver, sender: Sender
) -> None:
    # Given eight worker threads sharing one sender
    per_thread = 25

    def work(_: int) -> list[Outcome]:
        return [sender.send(post(receiver.url)) for _ in range(per_thread)]

    # When each sends 25 requests at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [outcome for batch in pool.map(work, range(8)) for outcome in batch]

    # Then every one succeeded, over at most one connection per thread
    assert len(outcomes) == 8 * per_thread
    assert all(outcome.succeeded for outcome in outcomes)
    assert len(receiver.requests) == 8 * per_thread
    assert len(receiver.connections) <= 8


def test_more_attempts_in_flight_than_twenty_keep_their_connections(receiver: Receiver) -> None:
    # Given a receiver taking 50 ms to answer, and 32 threads sharing one sender sized
    # for them as the worker sizes it (twice as many connections as threads)
    receiver.behaviour = Reply(status=204, delay=0.05)
    guard = TargetGuard(allowed_networks=LOOPBACK, allow_http=True)

    def work(_: int) -> list[Outcome]:
        return [sender.send(post(receiver.url)) for _ in range(5)]

    # When each thread sends five times, all of them at once
    with Sender(guard, USER_AGENT, max_connections=64) as sender, ThreadPoolExecutor(32) as pool:
        outcomes = [outcome for batch in pool.map(work, range(32)) for outcome in batch]

    # Then every connection was kept alive for the next attempt: at most one per thread
    assert all(outcome.succeeded for outcome in outcomes)
    assert len(receiver.requests) == 160
    assert len(receiver.connections) <= 32


def test_no_connection_is_made_outside_a_send() -> None:
    # Given the sender's transport used directly, bypassing the guard
    # When / Then it refuses to connect anywhere: no address was vetted
    with (
        httpx.Client(transport=PinnedTransport()) as client,
        pytest.raises(httpx.ConnectError, match="no address vetted"),
    ):
        client.get(f"http://127.0.0.1:{free_port()}/")
