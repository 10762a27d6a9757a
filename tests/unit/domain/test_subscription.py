"""The Subscription aggregate: billing periods and its life cycle."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from domain.catalog import Product, Sku, Variant
from domain.customer import Customer
from domain.errors import (
    CustomerDeletionRequested,
    ForeignReference,
    InvalidTransition,
    InvalidValue,
)
from domain.subscription import Subscription, SubscriptionStatus, period_end
from domain.values import Actor, Money

STORE_ID = UUID("00000000-0000-4000-8000-000000000001")
OTHER_STORE_ID = UUID("00000000-0000-4000-8000-000000000002")
ADMIN = Actor.person("admin@example.com")
BILLING = Actor.system()
NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)


def _customer(store_id: UUID = STORE_ID) -> Customer:
    return Customer.register(store_id, "jane@example.com", "Jane Doe", None, BILLING)


def _sku(store_id: UUID = STORE_ID, price: str = "9.90") -> Sku:
    product = Product.create(store_id, "Coffee beans", None, BILLING)
    variant = Variant.create(product, {"roast": "dark"}, BILLING)
    return Sku.create(variant, "COF-DARK-1KG", Money(Decimal(price), "EUR"), 100, BILLING)


def _subscription(interval: str = "month", now: datetime = NOW) -> Subscription:
    subscription = Subscription.start(_customer(), _sku(), interval, now, BILLING)
    subscription.collect_events()
    return subscription


# How to bring a new (active) subscription into each status.
PATH_TO: dict[SubscriptionStatus, Callable[[Subscription], None]] = {
    SubscriptionStatus.ACTIVE: lambda s: None,
    SubscriptionStatus.PAST_DUE: lambda s: s.record_payment_failure("card declined", BILLING),
    SubscriptionStatus.PAUSED: lambda s: s.pause(BILLING),
    SubscriptionStatus.CANCELLED: lambda s: s.cancel(BILLING),
    SubscriptionStatus.EXPIRED: lambda s: s.expire(BILLING),
}

ACTIONS: dict[str, Callable[[Subscription], None]] = {
    "renew": lambda s: s.renew(ADMIN),
    "record_payment_failure": lambda s: s.record_payment_failure(None, ADMIN),
    "pause": lambda s: s.pause(ADMIN),
    "resume": lambda s: s.resume(ADMIN),
    "cancel": lambda s: s.cancel(ADMIN),
    "expire": lambda s: s.expire(ADMIN),
}


def _subscription_in(status: SubscriptionStatus) -> Subscription:
    subscription = _subscription()
    PATH_TO[status](subscription)
    subscription.collect_events()
    assert subscription.status is status
    return subscription


# --- Starting ----------------------------------------------------------------------------


def test_start_subscribes_at_the_sku_price_for_one_period() -> None:
    # Given a customer and a SKU of the same store at 9.90
    customer, sku = _customer(), _sku(price="9.90")

    # When the customer subscribes monthly
    subscription = Subscription.start(customer, sku, "month", NOW, ADMIN)

    # Then the subscription is active in that store, at that price, until a month from now
    assert subscription.status is SubscriptionStatus.ACTIVE
    assert subscription.store_id == STORE_ID
    assert (subscription.customer_id, subscription.sku_id) == (customer.id, sku.id)
    assert subscription.price == Money(Decimal("9.90"), "EUR")
    assert subscription.current_period_end == datetime(2025, 4, 10, 9, 30, tzinfo=UTC)


def test_start_refuses_an_unknown_interval() -> None:
    # Given a customer and a SKU
    customer, sku = _customer(), _sku()

    # When the customer subscribes weekly
    with pytest.raises(InvalidValue) as refused:
        Subscription.start(customer, sku, "week", NOW, ADMIN)

    # Then it is refused on the interval field
    assert refused.value.field == "interval"


def test_start_refuses_a_customer_who_asked_to_be_deleted() -> None:
    # Given a customer who asked to be deleted
    customer = _customer()
    customer.request_deletion(ADMIN)

    # When a subscription is started for them
    # Then it is refused as a rule of the customer's state
    with pytest.raises(CustomerDeletionRequested, match="asked to be deleted"):
        Subscription.start(customer, _sku(), "month", NOW, ADMIN)


def test_start_refuses_a_sku_of_another_store() -> None:
    # Given a customer of one store and a SKU of another
    customer, sku = _customer(STORE_ID), _sku(OTHER_STORE_ID)

    # When the customer subscribes to it
    # Then it is a foreign reference
    with pytest.raises(ForeignReference):
        Subscription.start(customer, sku, "month", NOW, ADMIN)


def test_the_price_is_frozen_when_the_sku_price_changes_later() -> None:
    # Given a subscription to a SKU at 9.90
    customer, sku = _customer(), _sku(price="9.90")
    subscription = Subscription.start(customer, sku, "month", NOW, ADMIN)

    # When the SKU's price changes
    sku.change_price(Money(Decimal("12.00"), "EUR"), ADMIN)

    # Then the subscription keeps its price
    assert subscription.price == Money(Decimal("9.90"), "EUR")


# --- Billing periods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "interval", "end"),
    [
        pytest.param(datetime(2025, 3, 10), "month", datetime(2025, 4, 10), id="month"),
        pytest.param(datetime(2025, 12, 15), "month", datetime(2026, 1, 15), id="december"),
        pytest.param(datetime(2025, 1, 31), "month", datetime(2025, 2, 28), id="jan31-common"),
        pytest.param(datetime(2024, 1, 31), "month", datetime(2024, 2, 29), id="jan31-leap"),
        pytest.param(datetime(2025, 3, 31), "month", datetime(2025, 4, 30), id="mar31"),
        pytest.param(datetime(2025, 3, 10), "year", datetime(2026, 3, 10), id="year"),
        pytest.param(datetime(2024, 2, 29), "year", datetime(2025, 2, 28), id="feb29-year"),
    ],
)
def test_period_end_adds_a_month_or_year_clamped_to_month_end(
    start: datetime, interval: str, end: datetime
) -> None:
    # Given the start of a billing period
    # When its end is computed
    result = period_end(start.replace(tzinfo=UTC), interval)

    # Then it is one interval later, clamped to the last day of a shorter month
    assert result == end.replace(tzinfo=UTC)


def test_period_end_keeps_the_time_of_day_and_timezone() -> None:
    # Given a start with a time of day in UTC
    start = datetime(2025, 1, 31, 23, 59, 58, tzinfo=UTC)

    # When its monthly period end is computed
    end = period_end(start, "month")

    # Then only the date moved
    assert end == datetime(2025, 2, 28, 23, 59, 58, tzinfo=UTC)
    assert end.tzinfo is UTC


@pytest.mark.parametrize(
    ("start", "interval", "renewed"),
    [
        pytest.param(datetime(2024, 12, 31), "month", datetime(2025, 2, 28), id="to-feb-28"),
        pytest.param(datetime(2023, 12, 31), "month", datetime(2024, 2, 29), id="to-feb-29"),
        pytest.param(datetime(2024, 2, 29), "year", datetime(2026, 2, 28), id="yearly"),
    ],
)
def test_renew_extends_the_period_by_one_interval(
    start: datetime, interval: str, renewed: datetime
) -> None:
    # Given a subscription started at `start` (so its period ends one interval later)
    subscription = _subscription(interval, start.replace(tzinfo=UTC))
    first_end = subscription.current_period_end

    # When it is renewed
    subscription.renew(BILLING)

    # Then the period end moved one more interval, clamped to month end
    assert subscription.current_period_end == period_end(first_end, interval)
    assert subscription.current_period_end == renewed.replace(tzinfo=UTC)
    assert subscription.status is SubscriptionStatus.ACTIVE


# --- Life cycle --------------------------------------------------------------------------


def test_payment_failure_makes_it_past_due() -> None:
    # Given an active subscription
    subscription = _subscription()

    # When a payment fails
    subscription.record_payment_failure("card declined", BILLING)

    # Then it is past due
    assert subscription.status is SubscriptionStatus.PAST_DUE


def test_renewing_a_past_due_subscription_makes_it_active() -> None:
    # Given a past-due subscription
    subscription = _subscription_in(SubscriptionStatus.PAST_DUE)

    # When it is renewed
    subscription.renew(BILLING)

    # Then it is active again
    assert subscription.status is SubscriptionStatus.ACTIVE


def test_pause_then_resume_makes_it_active() -> None:
    # Given an active subscription
    subscription = _subscription()

    # When it is paused and then resumed
    subscription.pause(ADMIN)
    paused = subscription.status
    subscription.resume(ADMIN)

    # Then it was paused in between and is active again
    assert paused is SubscriptionStatus.PAUSED
    assert subscription.status is SubscriptionStatus.ACTIVE
    assert len(subscription.collect_events()) == 2


@pytest.mark.parametrize(
    "status", [SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE], ids=str
)
def test_resume_is_refused_unless_paused(status: SubscriptionStatus) -> None:
    # Given a subscription that is not paused
    subscription = _subscription_in(status)
    version = subscription.version

    # When it is resumed
    with pytest.raises(InvalidTransition):
        subscription.resume(ADMIN)

    # Then its status is unchanged and nothing was recorded
    assert subscription.status is status
    assert subscription.version == version
    assert subscription.collect_events() == []


@pytest.mark.parametrize(
    ("action", "status"),
    [
        pytest.param("renew", SubscriptionStatus.PAUSED, id="renew-paused"),
        pytest.param("pause", SubscriptionStatus.PAUSED, id="pause-paused"),
        pytest.param(
            "record_payment_failure", SubscriptionStatus.PAUSED, id="payment-failure-paused"
        ),
    ],
)
def test_a_paused_subscription_is_neither_renewed_nor_billed(
    action: str, status: SubscriptionStatus
) -> None:
    # Given a paused subscription
    subscription = _subscription_in(status)
    version = subscription.version

    # When it is renewed, paused again or billed
    with pytest.raises(InvalidTransition):
        ACTIONS[action](subscription)

    # Then it stays paused and nothing was recorded
    assert subscription.status is status
    assert subscription.version == version
    assert subscription.collect_events() == []


@pytest.mark.parametrize(
    "status",
    [SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionStatus.PAUSED],
    ids=str,
)
@pytest.mark.parametrize(
    ("action", "ended"),
    [("cancel", SubscriptionStatus.CANCELLED), ("expire", SubscriptionStatus.EXPIRED)],
)
def test_a_live_subscription_can_be_cancelled_or_expire(
    status: SubscriptionStatus, action: str, ended: SubscriptionStatus
) -> None:
    # Given an active, past-due or paused subscription
    subscription = _subscription_in(status)

    # When it is cancelled or expires
    ACTIONS[action](subscription)

    # Then it has ended
    assert subscription.status is ended


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize(
    "status", [SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED], ids=str
)
def test_nothing_happens_to_an_ended_subscription(action: str, status: SubscriptionStatus) -> None:
    # Given a cancelled or expired subscription
    subscription = _subscription_in(status)
    version = subscription.version
    period = subscription.current_period_end

    # When anything is done to it
    with pytest.raises(InvalidTransition, match="nothing more can happen"):
        ACTIONS[action](subscription)

    # Then it is unchanged and nothing was recorded
    assert subscription.status is status
    assert subscription.current_period_end == period
    assert subscription.version == version
    assert subscription.collect_events() == []


def test_renewals_keep_the_anchor_day_after_a_short_month() -> None:
    # Given a monthly subscription started on January 31
    started = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
    subscription = Subscription.start(_customer(), _sku(), "month", started, BILLING)

    # When it renews twice
    ends = [subscription.current_period_end]
    for _ in range(2):
        subscription.renew(BILLING)
        ends.append(subscription.current_period_end)

    # Then February's short month does not pull later periods back to the 28th
    assert [end.date().isoformat() for end in ends] == ["2025-02-28", "2025-03-31", "2025-04-30"]
