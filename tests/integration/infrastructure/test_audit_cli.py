"""`webround audit` (§7) run through `webround`'s own entry point, on SQLite and PostgreSQL.

The command reads the same settings from the environment as every other `webround`
command, brings the read models up to date itself, and prints a table or JSON — the same
rows `GET /v1/audit` answers for the same filters.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest

from application.dispatch import AttemptResult
from domain.delivery import delivery_id_of, envelope_id_of, event_id_of
from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, build
from infrastructure.cli import main
from infrastructure.settings import Settings

ANN = Actor.person("ann@shop.example")
SYSTEM = Actor.system()
URL = "https://93.184.215.14/h"  # a public address: no DNS, accepted by the SSRF guard


@pytest.fixture
def services(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """The services of the test, and an environment in which `webround` finds the same data."""
    for name in list(os.environ):
        if name.startswith("WEBROUND_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WEBROUND_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("WEBROUND_DATABASE_URL", settings.database_url)
    built = build(settings, jitter=lambda: 0.5)
    if settings.database_url:
        # Production roles are given the installation's key (here: the one just made).
        monkeypatch.setenv("WEBROUND_MASTER_KEY_FILE", str(settings.data_dir / "master.key"))
    yield built
    built.close()


@dataclass
class Shop:
    store: UUID
    api_key: str
    webhook: UUID
    other_webhook: UUID
    event_id: str
    replay: str
    mark: str  # before the webhook was disabled


def now() -> str:
    time.sleep(0.005)
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.005)
    return moment


def record(services: Services) -> Shop:
    """A store's history — with the read models NOT brought up to date."""
    store = UUID(services.webhooks.create_store("Shop", SYSTEM)["storeId"])
    api_key = services.webhooks.create_api_key(store, "ann@shop.example", SYSTEM)["apiKey"]
    webhook = UUID(services.webhooks.create_webhook(store, ANN, url=URL, event_types=["*"])["id"])
    other_webhook = UUID(
        services.webhooks.create_webhook(store, ANN, url=URL, event_types=["order.*"])["id"]
    )
    bob = services.commerce.register_customer(store, "bob@example.com", "Bob", None, ANN)
    services.dispatch.process_new_events()
    event_id = event_id_of(UUID(bob["id"]), 1)
    first = delivery_id_of(envelope_id_of(event_id), webhook)
    for number, status in ((1, 500), (2, 200)):
        services.dispatch.record_attempts(
            [AttemptResult(services.dispatch.ref(first), number, datetime.now(UTC), 30.0, status)]
        )
    [replay] = services.dispatch.send_again(store, event_id, ANN, webhook)
    mark = now()
    services.webhooks.update_webhook(
        store, webhook, SYSTEM, enabled=False, disabled_reason="failing for 5 days"
    )
    return Shop(store, api_key, webhook, other_webhook, event_id, replay["id"], mark)


def audit(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    """Run `webround audit FLAGS`: (exit code, stdout, stderr)."""
    code = main(["audit", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *flags: str) -> list[dict[str, Any]]:
    code, out, err = audit(capsys, *flags, "--json")
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


# The table ------------------------------------------------------------------------------------


def test_the_table_shows_time_kind_actor_and_summary_newest_first(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a store's history the read models have not caught up with
    shop = record(services)

    # When its audit log is printed
    code, out, _ = audit(capsys, "--store", str(shop.store))

    # Then there is a header and one line per entry, newest first, everything included
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.split() == ["TIME", "KIND", "ACTOR", "SUMMARY"]
    kinds = [line.split()[1] for line in lines]
    assert kinds == [
        "webhook.disabled",
        "delivery.sent_again",
        "delivery.succeeded",
        "delivery.attempt_failed",
        "delivery.created",
        "webhook.created",
        "webhook.created",
        "api_key.created",
        "store.created",
    ]
    # And each line has the time, the actor and the summary, in aligned columns
    disabled = lines[0]
    assert disabled.startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert disabled.split()[2] == "system"
    assert disabled.endswith("webhook disabled: failing for 5 days")
    sent_again = lines[1]
    assert sent_again.split()[2] == "ann@shop.example"
    assert sent_again.endswith("customer.registered sent again")
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # kinds align
    assert header.index("KIND") == lines[0].index("webhook.disabled")


def test_an_empty_answer_says_so(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    shop = record(services)

    # When nothing matches
    code, out, _ = audit(capsys, "--store", str(shop.store), "--actor", "nobody@example.com")

    # Then the command says so, and succeeds
    assert code == 0
    assert out.strip() == "no audit entries match"


# JSON, and the same rows as the API ---------------------------------------------------------------


@pytest.mark.anyio
async def test_json_holds_the_same_rows_as_the_api(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a store's history, and the API over the same services
    shop = record(services)
    cases: list[tuple[list[str], dict[str, str]]] = [
        ([], {}),
        (["--oldest-first"], {"order": "oldest"}),
        (
            ["--webhook", str(shop.webhook), "--kind", "webhook."],
            {
                "webhookId": str(shop.webhook),
                "kind": "webhook.",
            },
        ),
        (
            ["--event", shop.event_id, "--kind", "delivery.sent_again"],
            {
                "eventId": shop.event_id,
                "kind": "delivery.sent_again",
            },
        ),
        (["--delivery", shop.replay], {"deliveryId": shop.replay}),
        (
            ["--actor", "ann@shop.example", "--oldest-first"],
            {
                "actor": "ann@shop.example",
                "order": "oldest",
            },
        ),
        (["--since", shop.mark], {"since": shop.mark}),
        (["--until", shop.mark, "--limit", "3"], {"until": shop.mark, "limit": "3"}),
    ]
    # (the CLI catches the read models up; the API answers what they hold then)
    cli = [as_json(capsys, "--store", str(shop.store), *flags) for flags, _ in cases]
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for (flags, params), rows in zip(cases, cli, strict=True):
            # When the same question is asked of the CLI and the API
            response = await client.get(
                "/v1/audit", params=params, headers={"authorization": f"Bearer {shop.api_key}"}
            )

            # Then both answer the same rows
            assert response.status_code == 200, response.text
            assert rows == response.json()["data"], flags
            assert rows, flags  # every case asks for something that exists
    # And the answers are the ones asked for
    webhook_changes, sent_again = cli[2], cli[3]
    assert [e["kind"] for e in webhook_changes] == ["webhook.disabled", "webhook.created"]
    assert [(e["actor"], e["deliveryId"]) for e in sent_again] == [
        ("ann@shop.example", shop.replay)
    ]


def test_failed_attempts_to_a_webhook_in_the_last_hour(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    shop = record(services)

    # When the failed attempts of the last hour are asked for, the kinds given separately
    rows = as_json(
        capsys,
        "--store",
        str(shop.store),
        "--webhook",
        str(shop.webhook),
        "--kind",
        "delivery.attempt_failed",
        "--kind",
        "delivery.failed",
        "--since",
        "1h",
    )

    # Then it is the one failed attempt (not the success, not the other entries)
    assert [(e["kind"], e["details"]["statusCode"]) for e in rows] == [
        ("delivery.attempt_failed", 500)
    ]
    assert rows[0]["summary"].startswith("attempt 1 failed: HTTP 500; next at ")
    # And nothing failed in a time range that ended before it
    assert as_json(capsys, "--store", str(shop.store), "--until", "2h", "--kind", "delivery.") == []


def test_more_entries_than_one_page_are_all_printed_up_to_the_limit(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a store with over 200 audit entries
    store = UUID(services.webhooks.create_store("Busy", SYSTEM)["storeId"])
    services.webhooks.create_webhook(store, ANN, url=URL, event_types=["*"])
    for i in range(205):
        services.commerce.create_product(store, f"P{i}", None, ANN)
    while services.dispatch.process_new_events():
        pass

    # When more than a page is asked for, and then fewer than there are
    everything = as_json(capsys, "--store", str(store), "--limit", "1000", "--oldest-first")
    code, out, err = audit(capsys, "--store", str(store), "--limit", "203")

    # Then every entry is printed once, in order
    assert len(everything) == 2 + 205  # store, webhook, deliveries
    assert len({e["id"] for e in everything}) == len(everything)
    assert [e["kind"] for e in everything[:2]] == ["store.created", "webhook.created"]
    # And the table holds the limit, with a note that more follow
    assert code == 0
    assert len(out.strip().splitlines()) == 1 + 203
    assert "more entries follow" in err


# Mistakes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--since", "yesterday"], "--since"),
        (["--until", "2030-01-01"], "--until"),
        (["--webhook", "w1"], "--webhook"),
        (["--event", "e1"], "--event"),
        (["--delivery", "d1"], "--delivery"),
        (["--kind", "Webhook"], "--kind"),
        (["--limit", "0"], "--limit"),
        (["--since", "999999999d"], "--since"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_flag(
    services: Services, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    shop = record(services)

    # When a filter is bad
    code, out, err = audit(capsys, "--store", str(shop.store), *flags)

    # Then the command fails with exit code 2, naming the flag, and prints no table
    assert code == 2
    assert err.startswith(f"webround audit: {named}: ")
    assert out == ""


def test_the_store_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    # When no store is named
    with pytest.raises(SystemExit) as exited:
        main(["audit"])

    # Then argparse refuses, naming --store
    assert exited.value.code == 2
    assert "--store" in capsys.readouterr().err


# Merchants' text never drives the operator's terminal (issue #12, item 11) ----------------


def test_control_characters_in_merchants_text_are_printed_escaped(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a webhook disabled, by an earlier version, with a reason holding terminal
    # escape sequences (clear the screen, retitle the window), a C1 control and a
    # right-to-left override
    shop = record(services)
    reason = "\x1b[2J\x1b]0;pwned\x07gone\x9b31m\u202eevil"
    webhook = services.webhooks.get_webhook(shop.store, shop.other_webhook)
    webhook._disabled(reason=reason, actor=SYSTEM)  # recorded as it was then, unchecked
    services.webhooks.save(webhook)

    # When the operator reads the audit log, as a table and as JSON
    code, table, _ = audit(capsys, "--store", str(shop.store))
    code_json, out, _ = audit(capsys, "--store", str(shop.store), "--json")

    # Then no control character reaches the terminal: each is written as an escape
    assert code == code_json == 0
    for text in (table, out):
        assert not any(c in text for c in "\x1b\x07\x9b\u202e"), repr(text)
    assert "\\x1b[2J\\x1b]0;pwned\\x07gone\\x9b31m\\u202eevil" in table
    # And the JSON still reads back as the text that was recorded
    assert any(reason in entry["summary"] for entry in json.loads(out))
