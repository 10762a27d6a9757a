"""The events feed (GET /v1/events/feed, ADR 0028): the long poll `webround listen` follows —
every store event once, in order, by cursor; waiting without holding a thread."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from starlette.concurrency import run_in_threadpool

from domain.values import Actor
from tests.integration.infrastructure.api.conftest import Api
from tests.integration.infrastructure.api.test_recover_replay import settle

pytestmark = pytest.mark.anyio


async def feed(api: Api, **params: Any) -> Any:
    response = await api.client.get("/v1/events/feed", params=params, headers=api.shop.headers)
    assert response.status_code == 200, response.text
    return response.json()


def register(api: Api, *names: str) -> None:
    for name in names:
        api.services.commerce.register_customer(
            api.shop.store_id, f"{name}@x.example", name, None, Actor.system()
        )
    settle(api)


async def test_following_the_cursor_reads_every_event_once_in_order(api: Api) -> None:
    # Given events before the feed is first asked: listening starts from now
    register(api, "old")
    start = await feed(api)
    assert start["data"] == []

    # When events are recorded, of this store and of another
    register(api, "ann", "bob")
    api.services.commerce.register_customer(
        api.other.store_id, "x@other.example", "X", None, Actor.system()
    )
    settle(api)
    first = await feed(api, cursor=start["cursor"], limit=1)
    second = await feed(api, cursor=first["cursor"])
    after = await feed(api, cursor=second["cursor"])

    # Then each of this store's new events comes once, oldest first, with its envelope
    names = [e["envelope"]["data"]["customer"]["name"] for e in first["data"] + second["data"]]
    assert names == ["ann", "bob"]
    assert all(e["envelope"]["eventId"] == e["eventId"] for e in second["data"])
    # And past the last one, nothing: the cursor stays where it was
    assert after == {"data": [], "cursor": second["cursor"]}


async def test_a_filtered_feed_moves_its_cursor_past_what_it_leaves_out(api: Api) -> None:
    start = await feed(api)
    register(api, "ann")
    api.services.commerce.create_product(api.shop.store_id, "Mug", None, Actor.system())
    register(api, "bob")

    only_products = await feed(api, cursor=start["cursor"], eventTypes="product.*")
    rest = await feed(api, cursor=only_products["cursor"])

    assert [e["eventType"] for e in only_products["data"]] == ["product.created"]
    # The answer read past the customers before and after the product too: reading on
    # from its cursor gives neither of them again
    assert rest["data"] == []


async def test_a_waiting_request_answers_as_soon_as_an_event_is_recorded(api: Api) -> None:
    start = await feed(api)
    answers: list[Any] = []

    async def wait_for_one() -> None:
        answers.append(await feed(api, cursor=start["cursor"], wait=20))

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait_for_one)
            await anyio.sleep(0.3)  # the request is waiting now
            await run_in_threadpool(register, api, "ann")

    [answer] = answers
    assert [e["eventType"] for e in answer["data"]] == ["customer.registered"]


async def test_a_stopping_service_answers_waiting_requests_at_once(api: Api) -> None:
    start = await feed(api)
    api.services.stopping.set()

    with anyio.fail_after(15):  # far below the 25 s the request asks to wait
        answer = await feed(api, cursor=start["cursor"], wait=25)

    assert answer == {"data": [], "cursor": start["cursor"]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"wait": "26"}, "wait"),
        ({"wait": "-1"}, "wait"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"eventTypes": "order.*,nope"}, "eventTypes"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_parameters_are_refused_naming_them(
    api: Api, params: dict[str, str], field: str
) -> None:
    response = await api.client.get("/v1/events/feed", params=params, headers=api.shop.headers)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


async def test_another_stores_cursor_shows_nothing_of_that_store(api: Api) -> None:
    # A cursor is only a position: with this key it reads this store's events only
    theirs = (await api.client.get("/v1/events/feed", headers=api.other.headers)).json()["cursor"]
    api.services.commerce.register_customer(
        api.other.store_id, "x@other.example", "X", None, Actor.system()
    )
    settle(api)

    assert (await feed(api, cursor=theirs))["data"] == []
