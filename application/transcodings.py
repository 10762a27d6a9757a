"""How the domain's value objects are written into stored events (JSON transcodings)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Transcoding

from domain.order import OrderLine
from domain.values import Actor, Address, Money


class MoneyAsDict(Transcoding):
    type = Money
    name = "money"

    def encode(self, obj: Money) -> dict[str, str]:
        return {"amount": str(obj.amount), "currency": obj.currency}

    def decode(self, data: dict[str, str]) -> Money:
        return Money.parse(data["amount"], data["currency"])


class ActorAsDict(Transcoding):
    type = Actor
    name = "actor"

    def encode(self, obj: Actor) -> dict[str, str | None]:
        return {"kind": obj.kind, "email": obj.email}

    def decode(self, data: dict[str, Any]) -> Actor:
        return Actor(data["kind"], data["email"])


class AddressAsDict(Transcoding):
    type = Address
    name = "address"

    def encode(self, obj: Address) -> dict[str, str | None]:
        return {
            "line1": obj.line1,
            "line2": obj.line2,
            "city": obj.city,
            "postal_code": obj.postal_code,
            "country": obj.country,
        }

    def decode(self, data: dict[str, Any]) -> Address:
        return Address(**data)


class OrderLineAsDict(Transcoding):
    type = OrderLine
    name = "order_line"

    def encode(self, obj: OrderLine) -> dict[str, Any]:
        # Nested values (UUID, Money) are transcoded in turn by the JSON transcoder.
        return {"sku_id": obj.sku_id, "quantity": obj.quantity, "unit_price": obj.unit_price}

    def decode(self, data: dict[str, Any]) -> OrderLine:
        sku_id = data["sku_id"]
        return OrderLine(
            sku_id if isinstance(sku_id, UUID) else UUID(sku_id),
            data["quantity"],
            data["unit_price"],
        )


def register_store_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in (MoneyAsDict(), ActorAsDict(), AddressAsDict(), OrderLineAsDict()):
        transcoder.register(transcoding)
