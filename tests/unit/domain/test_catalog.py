"""The catalog aggregates: Product, Variant and SKU (price and stock)."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import pytest

from domain.catalog import Product, Sku, Variant
from domain.errors import ForeignReference, InsufficientStock, InvalidValue
from domain.values import Actor, Money

STORE_ID = UUID("00000000-0000-4000-8000-000000000001")
OTHER_STORE_ID = UUID("00000000-0000-4000-8000-000000000002")
ADMIN = Actor.person("admin@example.com")
SHOP = Actor.system()


def _eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


def _product(store_id: UUID = STORE_ID) -> Product:
    product = Product.create(store_id, "T-shirt", "Organic cotton", SHOP)
    product.collect_events()
    return product


def _variant(product: Product | None = None) -> Variant:
    variant = Variant.create(product or _product(), {"color": "red", "size": "M"}, SHOP)
    variant.collect_events()
    return variant


def _sku(stock: int = 10, price: str = "19.90", store_id: UUID = STORE_ID) -> Sku:
    sku = Sku.create(_variant(_product(store_id)), "TS-RED-M", _eur(price), stock, SHOP)
    sku.collect_events()
    return sku


# --- Product -----------------------------------------------------------------------------


def test_product_is_created_in_its_store() -> None:
    # Given a store
    # When a product is created
    product = Product.create(STORE_ID, "T-shirt", None, ADMIN)

    # Then it belongs to the store, with its name and no description
    assert product.store_id == STORE_ID
    assert (product.name, product.description) == ("T-shirt", None)


def test_product_with_an_empty_name_is_refused() -> None:
    # Given a blank name
    # When a product is created with it
    with pytest.raises(InvalidValue) as refused:
        Product.create(STORE_ID, "   ", None, ADMIN)

    # Then it is refused on the name field
    assert refused.value.field == "name"


def test_product_update_changes_only_the_given_fields() -> None:
    # Given a product
    product = _product()

    # When only its description is updated
    product.update(ADMIN, description="Recycled cotton")

    # Then the description changed and the name did not
    assert (product.name, product.description) == ("T-shirt", "Recycled cotton")


def test_product_update_to_an_empty_name_is_refused_and_records_nothing() -> None:
    # Given a product
    product = _product()
    version = product.version

    # When its name is updated to blanks
    with pytest.raises(InvalidValue):
        product.update(ADMIN, name="")

    # Then the name is unchanged and nothing was recorded
    assert product.name == "T-shirt"
    assert product.version == version
    assert product.collect_events() == []


# --- Variant -----------------------------------------------------------------------------


def test_variant_belongs_to_its_product_and_store() -> None:
    # Given a product of a store
    product = _product()

    # When a variant of it is created
    variant = Variant.create(product, {"color": "red"}, ADMIN)

    # Then the variant holds the product and store ids
    assert variant.product_id == product.id
    assert variant.store_id == product.store_id
    assert variant.attributes == {"color": "red"}


@pytest.mark.parametrize(
    "attributes",
    [{}, {"": "red"}, {"color": ""}, {"color": "  "}, {" ": "red"}],
)
def test_variant_refuses_empty_attributes(attributes: dict[str, str]) -> None:
    # Given missing or blank attributes
    # When a variant is created with them
    with pytest.raises(InvalidValue) as refused:
        Variant.create(_product(), attributes, ADMIN)

    # Then it is refused on the attributes field
    assert refused.value.field == "attributes"


def test_variant_update_attributes_replaces_them() -> None:
    # Given a red variant
    variant = _variant()

    # When its attributes are updated
    variant.update_attributes({"color": "blue"}, ADMIN)

    # Then they are replaced as a whole
    assert variant.attributes == {"color": "blue"}


def test_variant_update_to_empty_attributes_is_refused_and_records_nothing() -> None:
    # Given a variant
    variant = _variant()

    # When its attributes are emptied
    with pytest.raises(InvalidValue):
        variant.update_attributes({}, ADMIN)

    # Then they are unchanged and nothing was recorded
    assert variant.attributes == {"color": "red", "size": "M"}
    assert variant.collect_events() == []


# --- SKU ---------------------------------------------------------------------------------


def test_sku_belongs_to_its_variant_product_and_store() -> None:
    # Given a variant of a product
    product = _product()
    variant = _variant(product)

    # When a SKU of it is created
    sku = Sku.create(variant, "TS-RED-M", _eur("19.90"), 5, ADMIN)

    # Then the SKU holds all its parents' ids, its code, price and stock
    assert (sku.store_id, sku.product_id, sku.variant_id) == (STORE_ID, product.id, variant.id)
    assert (sku.code, sku.price, sku.stock) == ("TS-RED-M", _eur("19.90"), 5)


def test_sku_with_negative_initial_stock_is_refused() -> None:
    # Given a variant
    variant = _variant()

    # When a SKU is created with negative stock
    with pytest.raises(InvalidValue) as refused:
        Sku.create(variant, "TS-RED-M", _eur("19.90"), -1, ADMIN)

    # Then it is refused on the stock field
    assert refused.value.field == "stock"


def test_sku_with_an_empty_code_is_refused() -> None:
    # Given a variant
    variant = _variant()

    # When a SKU is created without a code
    with pytest.raises(InvalidValue) as refused:
        Sku.create(variant, " ", _eur("19.90"), 1, ADMIN)

    # Then it is refused on the code field
    assert refused.value.field == "code"


def test_sku_price_change_replaces_the_price() -> None:
    # Given a SKU at 19.90
    sku = _sku(price="19.90")

    # When its price changes
    sku.change_price(_eur("17.50"), ADMIN)

    # Then it has the new price
    assert sku.price == _eur("17.50")


def test_sku_set_stock_sets_the_absolute_quantity() -> None:
    # Given a SKU with 10 in stock
    sku = _sku(stock=10)

    # When its stock is set to 7
    sku.set_stock(7, ADMIN)

    # Then it has 7
    assert sku.stock == 7


def test_sku_set_stock_to_zero_is_allowed() -> None:
    # Given a SKU with 10 in stock
    sku = _sku(stock=10)

    # When its stock is set to 0
    sku.set_stock(0, ADMIN)

    # Then it has none
    assert sku.stock == 0


def test_sku_adjust_stock_adds_the_delta() -> None:
    # Given a SKU with 10 in stock
    sku = _sku(stock=10)

    # When 2 are taken and then 5 are added
    sku.adjust_stock(-2, ADMIN)
    sku.adjust_stock(5, ADMIN)

    # Then it has 13
    assert sku.stock == 13


def test_sku_adjust_stock_down_to_exactly_zero_is_allowed() -> None:
    # Given a SKU with 3 in stock
    sku = _sku(stock=3)

    # When all 3 are taken
    sku.adjust_stock(-3, ADMIN)

    # Then it has none
    assert sku.stock == 0


def test_sku_adjust_stock_below_zero_is_refused_and_stock_unchanged() -> None:
    # Given a SKU with 3 in stock
    sku = _sku(stock=3)
    version = sku.version

    # When 4 are taken
    with pytest.raises(InsufficientStock):
        sku.adjust_stock(-4, ADMIN)

    # Then the stock is unchanged and nothing was recorded
    assert sku.stock == 3
    assert sku.version == version
    assert sku.collect_events() == []


def test_sku_set_stock_below_zero_is_refused_and_stock_unchanged() -> None:
    # Given a SKU with 3 in stock
    sku = _sku(stock=3)

    # When its stock is set to -1
    with pytest.raises(InvalidValue, match="quantity"):
        sku.set_stock(-1, ADMIN)

    # Then the stock is unchanged and nothing was recorded
    assert sku.stock == 3
    assert sku.collect_events() == []


def test_sku_check_belongs_to_accepts_its_own_store() -> None:
    # Given a SKU of the store
    sku = _sku()

    # When it is checked against its own store
    sku.check_belongs_to(STORE_ID)

    # Then nothing is raised (and nothing recorded)
    assert sku.collect_events() == []


def test_sku_check_belongs_to_refuses_another_store() -> None:
    # Given a SKU of another store
    sku = _sku(store_id=OTHER_STORE_ID)

    # When it is checked against this store
    # Then it is a foreign reference
    with pytest.raises(ForeignReference):
        sku.check_belongs_to(STORE_ID)
