"""`webround webhooks|events|deliveries …` against a running `webround serve`: the API from
the command line, tables for people, JSON for scripts, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import wait_until
from tests.support.receiver import Receiver, RecordedRequest, Reply
from tests.support.served import WEBROUND, Served


@dataclass
class Cli:
    service: Served
    receiver: Receiver

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(WEBROUND), *args],
            env=env or self.service.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with Served(tmp_path_factory.mktemp("cli")) as service, Receiver() as receiver:
        yield Cli(service, receiver)


def register(cli: Cli, name: str) -> None:
    with cli.service.api() as api:
        body = {"email": f"{name}@x.example", "name": name}
        api.post("/v1/customers", json=body).raise_for_status()


def test_a_webhooks_life_from_the_command_line(cli: Cli) -> None:
    url = cli.receiver.url + "life"
    # Create: the secret is shown once, with the settings given
    created = cli.json(
        "webhooks", "create", "--url", url, "--events", "customer.*",
        "--description", "CRM", "--header", "X-Env: dev", "--timeout", "5",
        "--rate-limit", "20",
    )  # fmt: skip
    webhook_id = created["id"]
    assert created["secret"].startswith("whsec_")
    assert (created["headers"], created["timeoutSeconds"], created["rateLimit"]) == (
        {"X-Env": "[redacted]"},
        5,
        20,
    )
    # List and show, as tables for people
    listed = cli.ok("webhooks", "list")
    assert listed.splitlines()[0].split() == ["ID", "STATE", "EVENT", "TYPES", "URL", "DESCRIPTION"]
    assert webhook_id in listed
    shown = cli.ok("webhooks", "show", webhook_id)
    assert "custom headers  X-Env (values never shown)" in shown
    assert "whsec_" not in shown
    # Update: disable with a reason, then enable again with other event types
    cli.ok("webhooks", "update", webhook_id, "--disable", "--reason", "maintenance")
    disabled = cli.json("webhooks", "show", webhook_id)
    assert (disabled["enabled"], disabled["disabledReason"]) == (False, "maintenance")
    updated = cli.json(
        "webhooks", "update", webhook_id, "--enable", "--events", "customer.registered"
    )
    assert (updated["enabled"], updated["eventTypes"]) == (True, ["customer.registered"])
    # Rotate: a new secret, once
    rotated = cli.ok("webhooks", "rotate-secret", webhook_id, "--grace", "0")
    assert "new signing secret (shown once, keep it now): whsec_" in rotated
    # Delete: gone for every command
    cli.ok("webhooks", "delete", webhook_id)
    gone = cli.run("webhooks", "show", webhook_id)
    assert gone.returncode == 1
    assert gone.stderr.startswith("webround: HTTP 404: ")


def test_a_test_event_from_the_command_line_waits_for_the_endpoints_answer(cli: Cli) -> None:
    webhook = cli.json(
        "webhooks", "create", "--url", cli.receiver.url + "test", "--events", "order.*"
    )
    seen = len(cli.receiver.requests)

    out = cli.ok("webhooks", "test", webhook["id"], "--event-type", "order.paid", "--wait")

    # The endpoint got a test order.paid and the command says how it answered
    first, answer = out.strip().splitlines()
    assert first.startswith("test order.paid evt_test_")
    assert answer.startswith("the endpoint answered HTTP 200 in ")
    request = cli.receiver.requests[seen]
    assert json.loads(request.body)["test"] is True
    # And the test event is listed as such, apart from the store's events
    tests = cli.json("events", "list", "--test")
    assert tests[0]["eventId"] == request.headers["webhook-id"]
    assert all(not e["test"] for e in cli.json("events", "list"))
    # A failing endpoint makes the command fail, saying what it answered
    cli.receiver.enqueue(Reply(status=500))
    failed = cli.run("webhooks", "test", webhook["id"], "--wait")
    assert failed.returncode == 1
    assert "the endpoint answered HTTP 500" in failed.stdout


def test_events_deliveries_and_send_again(cli: Cli) -> None:
    webhook = cli.json(
        "webhooks", "create", "--url", cli.receiver.url + "events", "--events", "customer.*"
    )
    register(cli, "ann")
    delivered = wait_until(
        lambda: cli.json("deliveries", "list", "--webhook", webhook["id"], "--status", "succeeded")
    )
    [delivery] = delivered
    event_id = delivery["eventId"]

    # The delivery, with its attempts, as a table
    shown = cli.ok("deliveries", "show", delivery["id"])
    assert re.search(r"^status +succeeded$", shown, re.MULTILINE)
    assert "HTTP 200" in shown
    # The event, with its envelope and deliveries
    event = cli.ok("events", "show", event_id)
    assert f'"eventId": "{event_id}"' in event
    listed = cli.ok("events", "list", "--type", "customer.*", "--since", "1h")
    assert event_id in listed
    # Send again: a new delivery of the same event to the webhook
    again = cli.json("events", "send-again", event_id, "--webhook", webhook["id"])
    assert [d["webhookId"] for d in again["deliveries"]] == [webhook["id"]]
    replays = wait_until(
        lambda: [d for d in cli.json("deliveries", "list", "--event", event_id) if d["replay"]]
    )
    assert replays[0]["id"] == again["deliveries"][0]["id"]


def test_replay_follows_its_deliveries_with_a_progress_bar(cli: Cli) -> None:
    webhook = cli.json(
        "webhooks", "create", "--url", cli.receiver.url + "replay", "--events", "product.*"
    )
    with cli.service.api() as api:
        for n in range(3):
            api.post("/v1/products", json={"name": f"P{n}"}).raise_for_status()
    wait_until(lambda: len(cli.json("deliveries", "list", "--webhook", webhook["id"])) == 3)

    result = cli.run("webhooks", "replay", webhook["id"], "--since", "1h", "--wait")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["3 events sent again", "3 succeeded, 0 failed"]
    # The progress bar went to stderr and ended complete
    assert "sending [########################] 3/3 deliveries 100%" in result.stderr
    # Recover finds nothing to send again: nothing failed
    assert cli.ok("webhooks", "recover", webhook["id"], "--since", "1h").strip() == (
        "0 failed deliveries sent again"
    )


def test_errors_are_one_line_with_a_non_zero_exit(cli: Cli) -> None:
    # A refusal of the API: its problem, in one line
    refused = cli.run("webhooks", "create", "--url", "http://127.0.0.1:9/", "--events", "nope")
    assert refused.returncode == 1
    assert refused.stderr == (
        "webround: HTTP 422: the request body has invalid fields "
        "(eventTypes[0]: 'nope' is not a known event type or pattern)\n"
    )
    # No key, a bad key, an unreachable service
    no_key = {**cli.service.env, "WEBROUND_API_KEY": ""}
    assert cli.run("webhooks", "list", env=no_key).stderr == (
        "webround: set WEBROUND_API_KEY to an API key of your store\n"
    )
    bad_key = {**cli.service.env, "WEBROUND_API_KEY": "wr_0123456789abcdef_wrong"}
    assert cli.run("events", "list", env=bad_key).stderr.startswith("webround: HTTP 401: ")
    down = cli.run("deliveries", "list", "--api-url", "http://127.0.0.1:9")
    assert down.returncode == 1
    assert down.stderr.startswith("webround: cannot reach the API at http://127.0.0.1:9")
    # A wrong argument names the flag
    wrong = cli.run("deliveries", "list", "--since", "yesterday")
    assert wrong.returncode == 1
    assert "since: must be an ISO 8601 time" in wrong.stderr
    assert len(wrong.stderr.splitlines()) == 1


def test_what_merchants_and_receivers_wrote_cannot_steer_the_terminal(cli: Cli) -> None:
    # Given a description holding a bidirectional override (the API refuses control
    # characters in it, issue #12) and a receiver's answer holding control sequences
    hostile = "shop\u202eevil"
    webhook = cli.json(
        "webhooks", "create", "--url", cli.receiver.url + "hostile", "--events", "sku.*",
        "--description", hostile,
    )  # fmt: skip

    def answer(request: RecordedRequest) -> Reply:
        return Reply(status=500, body=b"\x1b[31mred\x9b2J\r\n")

    cli.receiver.behaviour = answer
    try:
        sent = json.loads(cli.run("webhooks", "test", webhook["id"], "--wait", "--json").stdout)
    finally:
        cli.receiver.behaviour = Reply()
    assert sent["delivery"]["attempts"][0]["statusCode"] == 500

    # Then no table or detail prints a control character raw
    for args in (
        ("webhooks", "list"),
        ("webhooks", "show", webhook["id"]),
        ("deliveries", "show", sent["deliveryId"]),
        ("events", "show", sent["eventId"]),
        ("webhooks", "list", "--json"),
    ):
        out = cli.ok(*args)
        assert not any(c in out for c in "\x1b\x07\x9b\u202e\r"), args
    shown = cli.ok("webhooks", "show", webhook["id"])
    assert "shop\\u202eevil" in shown


def test_the_commands_need_no_configuration_of_the_service(cli: Cli, tmp_path: Path) -> None:
    # A client machine has only the URL and the key: no data directory, no master key
    env = {**cli.service.env, "WEBROUND_DATA_DIR": str(tmp_path / "nothing-here")}
    assert cli.run("webhooks", "list", env=env).returncode == 0
    assert not (tmp_path / "nothing-here").exists()
