"""The Subscription aggregate: a customer's recurring purchase of one SKU."""

from __future__ import annotations

import calendar
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.base import StoreAggregate
from domain.catalog import Sku
from domain.customer import Customer
from domain.errors import InvalidTransition, InvalidValue
from domain.values import Actor, Money, check_text


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


INTERVALS = ("month", "year")
ENDED = frozenset({SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED})
RUNNING = frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE})


def period_end(start: datetime, interval: str, anchor_day: int | None = None) -> datetime:
    """The end of a billing period that starts at ``start``.

    Periods keep the subscription's anchor day (the day of month it started): one started
    on Jan 31 renews on Feb 28, then Mar 31 — a short month does not pull later ones back.
    """
    months = 1 if interval == "month" else 12
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(anchor_day or start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


class Subscription(StoreAggregate):
    entity = "subscription"

    @event("Created")
    def __init__(
        self,
        store_id: UUID,
        customer_id: UUID,
        sku_id: UUID,
        interval: str,
        price: Money,
        current_period_end: datetime,
        anchor_day: int,
        actor: Actor,
    ) -> None:
        self.store_id = store_id
        self.customer_id = customer_id
        self.sku_id = sku_id
        self.interval = interval
        self.price = price
        self.current_period_end = current_period_end
        self.anchor_day = anchor_day  # the day of month billing periods end on
        self.status = SubscriptionStatus.ACTIVE

    @classmethod
    def start(
        cls, customer: Customer, sku: Sku, interval: str, now: datetime, actor: Actor
    ) -> Subscription:
        """Subscribe a customer to a SKU at the SKU's current price, from ``now``."""
        customer.check_can_buy()
        if interval not in INTERVALS:
            raise InvalidValue("interval", f"must be one of {', '.join(INTERVALS)}")
        sku.check_belongs_to(customer.store_id)
        return cls(
            customer.store_id,
            customer.id,
            sku.id,
            interval,
            sku.price,
            period_end(now, interval),
            now.day,
            actor,
        )

    def renew(self, actor: Actor) -> None:
        self._check_in(RUNNING, "renew")
        self._renewed(
            current_period_end=period_end(self.current_period_end, self.interval, self.anchor_day),
            actor=actor,
        )

    @event("Renewed")
    def _renewed(self, current_period_end: datetime, actor: Actor) -> None:
        self.current_period_end = current_period_end
        self.status = SubscriptionStatus.ACTIVE

    def record_payment_failure(self, reason: str | None, actor: Actor) -> None:
        if reason is not None:
            check_text("reason", reason, multiline=True)
        self._check_in(RUNNING, "record a failed payment for")
        self._payment_failed(reason=reason, actor=actor)

    @event("PaymentFailed")
    def _payment_failed(self, reason: str | None, actor: Actor) -> None:
        self.status = SubscriptionStatus.PAST_DUE

    def pause(self, actor: Actor) -> None:
        self._check_in(RUNNING, "pause")
        self._paused(actor=actor)

    @event("Paused")
    def _paused(self, actor: Actor) -> None:
        self.status = SubscriptionStatus.PAUSED

    def resume(self, actor: Actor) -> None:
        self._check_in(frozenset({SubscriptionStatus.PAUSED}), "resume")
        self._resumed(actor=actor)

    @event("Resumed")
    def _resumed(self, actor: Actor) -> None:
        self.status = SubscriptionStatus.ACTIVE

    def cancel(self, actor: Actor) -> None:
        self._check_in(RUNNING | {SubscriptionStatus.PAUSED}, "cancel")
        self._cancelled(actor=actor)

    @event("Cancelled")
    def _cancelled(self, actor: Actor) -> None:
        self.status = SubscriptionStatus.CANCELLED

    def expire(self, actor: Actor) -> None:
        self._check_in(RUNNING | {SubscriptionStatus.PAUSED}, "expire")
        self._expired(actor=actor)

    @event("Expired")
    def _expired(self, actor: Actor) -> None:
        self.status = SubscriptionStatus.EXPIRED

    def _check_in(self, allowed: frozenset[SubscriptionStatus], action: str) -> None:
        if self.status in allowed:
            return
        if self.status in ENDED:
            raise InvalidTransition(
                f"subscription {self.id} is {self.status.value}; nothing more can happen to it"
            )
        raise InvalidTransition(f"cannot {action} a subscription that is {self.status.value}")
