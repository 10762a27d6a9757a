"""Idempotency keys (SPEC §8) on real storage: SQLite (embedded) and PostgreSQL (production).

Every test that touches storage runs once per backend through the parametrised `settings`
fixture; `reopened` is a second store on the same file or database, as another process
would open it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from infrastructure.idempotency import (
    IdempotencyStore,
    InProgress,
    Mismatch,
    Outcome,
    PostgresIdempotencyStore,
    Proceed,
    Replay,
    SqliteIdempotencyStore,
    StoredResponse,
    fingerprint,
    open_idempotency_store,
)
from infrastructure.settings import Settings

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
CREATE_ORDER = fingerprint("POST", "/v1/orders", b'{"sku": "MUG-RED", "quantity": 2}')
OTHER_ORDER = fingerprint("POST", "/v1/orders", b'{"sku": "MUG-RED", "quantity": 3}')
CREATED = StoredResponse(
    status=201,
    # Not valid UTF-8 on purpose: the body must come back byte for byte.
    body=b'{"id": "ord_1", "note": "caf\xc3\xa9"}\xff\x00\n',
    content_type="application/json; charset=utf-8",
)


@pytest.fixture
def store(settings: Settings) -> Iterator[IdempotencyStore]:
    idempotency = open_idempotency_store(settings)
    yield idempotency
    idempotency.close()


@pytest.fixture
def reopened(settings: Settings, store: IdempotencyStore) -> Iterator[IdempotencyStore]:
    """A second store on the same storage, opened after `store`, as another process would."""
    idempotency = open_idempotency_store(settings)
    yield idempotency
    idempotency.close()


def test_the_mode_picks_the_backend(settings: Settings, store: IdempotencyStore) -> None:
    # Given the settings of one mode
    # When the store is opened (by the `store` fixture)
    # Then it is SQLite in the data directory when embedded, PostgreSQL otherwise
    if settings.embedded:
        assert isinstance(store, SqliteIdempotencyStore)
        assert (settings.data_dir / "idempotency.sqlite").is_file()
    else:
        assert isinstance(store, PostgresIdempotencyStore)


def test_the_first_request_with_a_key_proceeds(store: IdempotencyStore) -> None:
    # Given a store that has never seen the key
    shop = uuid4()

    # When a request begins with it
    outcome = store.begin(shop, "order-1", CREATE_ORDER, T0)

    # Then the command may run
    assert outcome == Proceed()


def test_a_finished_request_is_replayed_byte_for_byte(store: IdempotencyStore) -> None:
    # Given a request that ran and finished with a 201
    shop = uuid4()
    assert store.begin(shop, "order-1", CREATE_ORDER, T0) == Proceed()
    store.finish(shop, "order-1", CREATED)

    # When the same request is sent again, and again just inside the 24 h window
    first = store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(minutes=5))
    last = store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(hours=23, minutes=59))

    # Then both get the first response back, identical in status, bytes and type
    assert first == Replay(CREATED)
    assert last == Replay(CREATED)
    assert isinstance(first, Replay)
    assert first.response.body == CREATED.body
    assert first.response.status == 201
    assert first.response.content_type == "application/json; charset=utf-8"


def test_finishing_again_does_not_replace_the_first_response(store: IdempotencyStore) -> None:
    # Given a request that finished with a 201
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)
    store.finish(shop, "order-1", CREATED)

    # When a second response is recorded for the same key
    store.finish(shop, "order-1", StoredResponse(500, b"boom", "text/plain"))

    # Then the first response is still the one replayed
    assert store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(seconds=1)) == Replay(CREATED)


def test_an_empty_body_is_replayed_as_empty_bytes(store: IdempotencyStore) -> None:
    # Given a request that finished with 204 and no body
    shop = uuid4()
    store.begin(shop, "delete-1", CREATE_ORDER, T0)
    store.finish(shop, "delete-1", StoredResponse(204, b"", "text/plain"))

    # When it is sent again
    outcome = store.begin(shop, "delete-1", CREATE_ORDER, T0 + timedelta(seconds=1))

    # Then the replay carries an empty body (not None)
    assert outcome == Replay(StoredResponse(204, b"", "text/plain"))


def test_a_key_reused_for_another_request_is_a_mismatch(store: IdempotencyStore) -> None:
    # Given a key used by a finished request and a key used by a running one
    shop = uuid4()
    store.begin(shop, "done", CREATE_ORDER, T0)
    store.finish(shop, "done", CREATED)
    store.begin(shop, "running", CREATE_ORDER, T0)

    # When each key comes back with a different body
    done = store.begin(shop, "done", OTHER_ORDER, T0 + timedelta(seconds=10))
    running = store.begin(shop, "running", OTHER_ORDER, T0 + timedelta(seconds=10))

    # Then both are mismatches, and the original requests are unaffected
    assert done == Mismatch()
    assert running == Mismatch()
    assert store.begin(shop, "done", CREATE_ORDER, T0 + timedelta(seconds=11)) == Replay(CREATED)
    assert store.begin(shop, "running", CREATE_ORDER, T0 + timedelta(seconds=11)) == InProgress()


def test_a_request_still_running_is_in_progress(store: IdempotencyStore) -> None:
    # Given a request that began but has not finished
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)

    # When the same request arrives right away and again at 60 s
    soon = store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(seconds=1))
    at_the_limit = store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(seconds=60))

    # Then both are told it is in progress
    assert soon == InProgress()
    assert at_the_limit == InProgress()


def test_an_unfinished_entry_older_than_60_seconds_is_taken_over(
    store: IdempotencyStore,
) -> None:
    # Given a request that began and never finished (its process was killed)
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)

    # When the request is retried 61 s later
    later = T0 + timedelta(seconds=61)
    retry = store.begin(shop, "order-1", CREATE_ORDER, later)

    # Then the retry takes the key over: it runs, others now wait for it, and its
    # response is the one replayed
    assert retry == Proceed()
    assert store.begin(shop, "order-1", CREATE_ORDER, later + timedelta(seconds=1)) == InProgress()
    store.finish(shop, "order-1", CREATED)
    assert store.begin(shop, "order-1", CREATE_ORDER, later + timedelta(seconds=2)) == Replay(
        CREATED
    )


def test_a_stale_entry_can_be_taken_over_by_another_request(store: IdempotencyStore) -> None:
    # Given a request that began and never finished
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)

    # When another request reuses the key after 61 s
    outcome = store.begin(shop, "order-1", OTHER_ORDER, T0 + timedelta(seconds=61))

    # Then it runs, and the key now belongs to the new request
    assert outcome == Proceed()
    assert store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(seconds=62)) == Mismatch()


def test_after_24_hours_the_key_is_free_again_and_purged(store: IdempotencyStore) -> None:
    # Given a request that finished at T0 and another that finished an hour later
    shop = uuid4()
    store.begin(shop, "old", CREATE_ORDER, T0)
    store.finish(shop, "old", CREATED)
    store.begin(shop, "recent", CREATE_ORDER, T0 + timedelta(hours=1))
    store.finish(shop, "recent", CREATED)

    # When 24 h and a second have passed since T0
    day_later = T0 + timedelta(hours=24, seconds=1)

    # Then purging removes the old entry only, and a second purge finds nothing more
    assert store.purge(day_later) == 1
    assert store.purge(day_later) == 0
    # And the old entry is really gone: even a begin dated inside its window proceeds
    assert store.begin(shop, "old", CREATE_ORDER, T0 + timedelta(hours=2)) == Proceed()
    assert store.begin(shop, "recent", CREATE_ORDER, day_later) == Replay(CREATED)


def test_an_expired_entry_counts_as_absent_before_any_purge(store: IdempotencyStore) -> None:
    # Given a request that finished at T0
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)
    store.finish(shop, "order-1", CREATED)

    # When the key comes back more than 24 h later, with another body, no purge having run
    outcome = store.begin(shop, "order-1", OTHER_ORDER, T0 + timedelta(hours=24, seconds=1))

    # Then it is a new request: it runs, and a fresh 24 h window starts
    assert outcome == Proceed()
    store.finish(shop, "order-1", StoredResponse(202, b"{}", "application/json"))
    assert store.begin(shop, "order-1", OTHER_ORDER, T0 + timedelta(hours=25)) == Replay(
        StoredResponse(202, b"{}", "application/json")
    )
    assert store.purge(T0 + timedelta(hours=25)) == 0


def test_the_same_key_in_two_stores_is_two_entries(store: IdempotencyStore) -> None:
    # Given two stores (tenants) that both use the key "order-1"
    shop_a, shop_b = uuid4(), uuid4()
    assert store.begin(shop_a, "order-1", CREATE_ORDER, T0) == Proceed()
    store.finish(shop_a, "order-1", CREATED)

    # When the second store begins with the same key and a different body
    outcome = store.begin(shop_b, "order-1", OTHER_ORDER, T0)

    # Then it runs on its own, and each store replays its own response
    assert outcome == Proceed()
    accepted = StoredResponse(202, b'{"id": "ord_2"}', "application/json")
    store.finish(shop_b, "order-1", accepted)
    assert store.begin(shop_a, "order-1", CREATE_ORDER, T0 + timedelta(seconds=1)) == Replay(
        CREATED
    )
    assert store.begin(shop_b, "order-1", OTHER_ORDER, T0 + timedelta(seconds=1)) == Replay(
        accepted
    )
    # And abandoning in one store leaves the other alone
    store.begin(shop_a, "order-2", CREATE_ORDER, T0)
    store.begin(shop_b, "order-2", CREATE_ORDER, T0)
    store.abandon(shop_a, "order-2")
    assert store.begin(shop_b, "order-2", CREATE_ORDER, T0 + timedelta(seconds=1)) == InProgress()


def test_abandon_frees_the_key_for_a_retry(store: IdempotencyStore) -> None:
    # Given a request whose command failed unexpectedly
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)

    # When the API abandons the key
    store.abandon(shop, "order-1")

    # Then a retry, even with a corrected body, runs at once
    assert store.begin(shop, "order-1", OTHER_ORDER, T0 + timedelta(seconds=1)) == Proceed()


def test_abandon_never_forgets_a_finished_request(store: IdempotencyStore) -> None:
    # Given a request that finished
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)
    store.finish(shop, "order-1", CREATED)

    # When the key is abandoned afterwards (and an unknown key too)
    store.abandon(shop, "order-1")
    store.abandon(shop, "never-seen")

    # Then the first result is still replayed
    assert store.begin(shop, "order-1", CREATE_ORDER, T0 + timedelta(seconds=1)) == Replay(CREATED)


def _race(
    stores: list[IdempotencyStore], shop: UUID, key: str, threads: int, now: datetime = T0
) -> list[Outcome]:
    barrier = threading.Barrier(threads)

    def attempt(index: int) -> Outcome:
        barrier.wait(timeout=10)
        return stores[index % len(stores)].begin(shop, key, CREATE_ORDER, now)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(attempt, range(threads)))


def test_concurrent_requests_with_one_key_run_exactly_once(store: IdempotencyStore) -> None:
    # Given one store
    shop = uuid4()
    for round_number in range(5):
        # When 8 threads begin the same request with the same key at the same moment
        outcomes = _race([store], shop, f"race-{round_number}", threads=8)

        # Then exactly one may run and the seven others are told it is in progress
        assert outcomes.count(Proceed()) == 1, outcomes
        assert outcomes.count(InProgress()) == 7, outcomes


def test_concurrent_requests_through_two_instances_run_exactly_once(
    store: IdempotencyStore, reopened: IdempotencyStore
) -> None:
    # Given two store instances on the same storage (two processes)
    shop = uuid4()
    for round_number in range(5):
        # When 8 threads, split over both instances, begin the same request at once
        outcomes = _race([store, reopened], shop, f"race-{round_number}", threads=8)

        # Then exactly one of them may run
        assert outcomes.count(Proceed()) == 1, outcomes
        assert outcomes.count(InProgress()) == 7, outcomes


def test_concurrent_retries_take_over_a_stale_entry_exactly_once(
    store: IdempotencyStore, reopened: IdempotencyStore
) -> None:
    # Given requests that began and never finished, over a minute ago
    shop = uuid4()
    for round_number in range(5):
        store.begin(shop, f"stale-{round_number}", OTHER_ORDER, T0)

        # When 8 threads over two instances retry it at the same moment
        later = T0 + timedelta(seconds=61)
        outcomes = _race([store, reopened], shop, f"stale-{round_number}", threads=8, now=later)

        # Then exactly one takes it over and the others wait for that one
        assert outcomes.count(Proceed()) == 1, outcomes
        assert outcomes.count(InProgress()) == 7, outcomes


def test_a_second_instance_sees_the_entries_of_the_first(
    store: IdempotencyStore, reopened: IdempotencyStore
) -> None:
    # Given one instance that finished a request and began another
    shop = uuid4()
    store.begin(shop, "done", CREATE_ORDER, T0)
    store.finish(shop, "done", CREATED)
    store.begin(shop, "running", CREATE_ORDER, T0)

    # When another instance on the same storage sees the same keys
    done = reopened.begin(shop, "done", CREATE_ORDER, T0 + timedelta(seconds=1))
    running = reopened.begin(shop, "running", CREATE_ORDER, T0 + timedelta(seconds=1))
    reused = reopened.begin(shop, "done", OTHER_ORDER, T0 + timedelta(seconds=1))

    # Then it replays, waits and refuses exactly as the first would
    assert done == Replay(CREATED)
    assert running == InProgress()
    assert reused == Mismatch()
    # And what it records is visible to the first
    reopened.begin(shop, "from-reopened", OTHER_ORDER, T0)
    assert store.begin(shop, "from-reopened", OTHER_ORDER, T0) == InProgress()
    assert reopened.purge(T0 + timedelta(hours=25)) == 3
    assert store.begin(shop, "done", CREATE_ORDER, T0 + timedelta(seconds=2)) == Proceed()


def test_keys_are_limited_to_255_characters(store: IdempotencyStore) -> None:
    # Given a key of exactly 255 characters, one of 256 and an empty one
    shop = uuid4()
    longest = "k" * 255

    # When each is used
    # Then the longest allowed key works and is stored in full
    assert store.begin(shop, longest, CREATE_ORDER, T0) == Proceed()
    assert store.begin(shop, longest, CREATE_ORDER, T0) == InProgress()
    assert store.begin(shop, longest[:-1], CREATE_ORDER, T0) == Proceed()
    # And the others are refused before anything is recorded
    with pytest.raises(ValueError, match="255"):
        store.begin(shop, "k" * 256, CREATE_ORDER, T0)
    with pytest.raises(ValueError, match="255"):
        store.begin(shop, "", CREATE_ORDER, T0)
    with pytest.raises(ValueError, match="control"):
        store.begin(shop, "bad\x00key", CREATE_ORDER, T0)
    with pytest.raises(ValueError, match="255"):
        store.finish(shop, "k" * 256, CREATED)
    with pytest.raises(ValueError, match="255"):
        store.abandon(shop, "k" * 256)
    assert store.purge(T0 + timedelta(days=2)) == 2


def test_times_must_be_timezone_aware(store: IdempotencyStore) -> None:
    # Given a naive datetime
    naive = datetime(2026, 12, 1, 9, 30)

    # When it is passed as "now"
    # Then it is refused rather than guessed
    with pytest.raises(ValueError, match="timezone"):
        store.begin(uuid4(), "order-1", CREATE_ORDER, naive)
    with pytest.raises(ValueError, match="timezone"):
        store.purge(naive)


def test_times_in_other_zones_mean_the_same_instant(store: IdempotencyStore) -> None:
    # Given a request begun at T0 (UTC)
    shop = uuid4()
    store.begin(shop, "order-1", CREATE_ORDER, T0)

    # When the same instant + 61 s arrives expressed in UTC+2
    plus_two = (T0 + timedelta(seconds=61)).astimezone(timezone(timedelta(hours=2)))

    # Then the entry is stale exactly as in UTC
    assert store.begin(shop, "order-1", CREATE_ORDER, plus_two) == Proceed()


def test_the_fingerprint_covers_method_path_and_body() -> None:
    # Given one request
    base = fingerprint("POST", "/v1/orders", b"{}")

    # When any part of it changes
    # Then the fingerprint changes; the same request always gives the same SHA-256 hex
    assert base == fingerprint("POST", "/v1/orders", b"{}")
    assert base == fingerprint("post", "/v1/orders", b"{}")
    assert len(base) == 64
    assert int(base, 16) >= 0
    assert base != fingerprint("PUT", "/v1/orders", b"{}")
    assert base != fingerprint("POST", "/v1/orders/", b"{}")
    assert base != fingerprint("POST", "/v1/orders", b"{ }")
    # And the parts cannot bleed into each other
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/ab", b"")
