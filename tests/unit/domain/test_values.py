"""Value objects: Money, Actor and Address validate themselves on construction."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from domain.errors import InvalidValue
from domain.values import Actor, Address, Money, check_email, check_text

# --- Money -------------------------------------------------------------------------------


def test_money_normalises_an_amount_to_the_currency_decimals() -> None:
    # Given an amount written with fewer decimals than EUR has
    raw = "19.9"

    # When it becomes Money
    money = Money.parse(raw, "EUR")

    # Then it is stored (and printed) with exactly two decimals
    assert money.amount == Decimal("19.90")
    assert str(money.amount) == "19.90"
    assert str(money) == "19.90 EUR"


def test_money_with_equal_amounts_written_differently_are_equal() -> None:
    # Given the same amount written three ways
    # When each becomes Money
    amounts = {Money.parse(raw, "EUR") for raw in ("5", "5.0", "5.00")}

    # Then they are one value
    assert amounts == {Money(Decimal("5.00"), "EUR")}


@pytest.mark.parametrize(
    ("raw", "currency", "decimals"),
    [
        ("19.999", "EUR", 2),
        ("0.001", "USD", 2),
        ("100.5", "JPY", 0),
        ("1.2345", "KWD", 3),
    ],
)
def test_money_refuses_more_decimals_than_the_currency_allows(
    raw: str, currency: str, decimals: int
) -> None:
    # Given an amount with one decimal more than the currency has
    amount = Decimal(raw)

    # When it becomes Money
    with pytest.raises(InvalidValue) as refused:
        Money(amount, currency)

    # Then the amount is refused, naming the field and the currency's decimals
    assert refused.value.field == "amount"
    assert f"at most {decimals} decimals" in refused.value.message


@pytest.mark.parametrize(
    ("raw", "currency", "printed"),
    [
        ("1.234", "KWD", "1.234"),
        ("1.5", "KWD", "1.500"),
        ("100", "JPY", "100"),
        ("0.01", "EUR", "0.01"),
    ],
)
def test_money_accepts_up_to_the_currency_decimals(raw: str, currency: str, printed: str) -> None:
    # Given an amount within the currency's decimals
    amount = Decimal(raw)

    # When it becomes Money
    money = Money(amount, currency)

    # Then it keeps its value, written with the currency's decimals
    assert str(money.amount) == printed
    assert money.currency == currency


def test_money_refuses_a_negative_amount() -> None:
    # Given a negative amount
    amount = Decimal("-0.01")

    # When it becomes Money
    with pytest.raises(InvalidValue) as refused:
        Money(amount, "EUR")

    # Then it is refused on the amount field
    assert refused.value.field == "amount"


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("Infinity"), 5, 5.0])
def test_money_refuses_anything_but_a_finite_decimal(amount: object) -> None:
    # Given something that is not a finite Decimal
    # When it is used as an amount
    with pytest.raises(InvalidValue) as refused:
        Money(amount, "EUR")  # type: ignore[arg-type]

    # Then it is refused on the amount field
    assert refused.value.field == "amount"


@pytest.mark.parametrize("currency", ["EURO", "eur", "XXX", "", "ABC"])
def test_money_refuses_a_currency_that_is_not_iso_4217(currency: str) -> None:
    # Given a currency code that ISO 4217 does not define (in upper case)
    # When it is used for Money
    with pytest.raises(InvalidValue) as refused:
        Money(Decimal("1.00"), currency)

    # Then it is refused on the currency field
    assert refused.value.field == "currency"


@pytest.mark.parametrize("garbage", ["abc", "", "1,50", "19.90 EUR", None])
def test_money_parse_of_garbage_names_the_amount_field(garbage: object) -> None:
    # Given a JSON amount that is not a decimal number
    # When it is parsed
    with pytest.raises(InvalidValue) as refused:
        Money.parse(garbage, "EUR")  # type: ignore[arg-type]

    # Then the error is an InvalidValue naming the amount field
    assert refused.value.field == "amount"
    assert repr(garbage) in refused.value.message


def test_money_parse_of_an_unknown_currency_names_the_currency_field() -> None:
    # Given a well-formed amount in a made-up currency
    # When it is parsed
    with pytest.raises(InvalidValue) as refused:
        Money.parse("1.00", "BTC")

    # Then the error names the currency field
    assert refused.value.field == "currency"


def test_money_adds_subtracts_and_multiplies_in_one_currency() -> None:
    # Given two amounts in EUR
    a, b = Money.parse("19.90", "EUR"), Money.parse("5.10", "EUR")

    # When they are combined
    total, difference, tripled = a + b, a - b, a * 3

    # Then the results are EUR amounts with the right values
    assert total == Money.parse("25.00", "EUR")
    assert difference == Money.parse("14.80", "EUR")
    assert tripled == Money.parse("59.70", "EUR")
    assert b < a
    assert a <= a
    assert not a < b


def test_money_subtraction_below_zero_is_refused() -> None:
    # Given a smaller and a larger amount
    small, large = Money.parse("1.00", "EUR"), Money.parse("2.00", "EUR")

    # When the larger is taken from the smaller
    with pytest.raises(InvalidValue) as refused:
        _ = small - large

    # Then the negative result is refused
    assert refused.value.field == "amount"


@pytest.mark.parametrize(
    "combine",
    [
        pytest.param(lambda a, b: a + b, id="add"),
        pytest.param(lambda a, b: a - b, id="subtract"),
        pytest.param(lambda a, b: a < b, id="less-than"),
        pytest.param(lambda a, b: a <= b, id="less-or-equal"),
    ],
)
def test_money_refuses_arithmetic_across_currencies(
    combine: Callable[[Money, Money], object],
) -> None:
    # Given an amount in EUR and one in USD
    eur, usd = Money.parse("10.00", "EUR"), Money.parse("1.00", "USD")

    # When they are combined
    with pytest.raises(InvalidValue) as refused:
        combine(eur, usd)

    # Then it is refused on the currency field
    assert refused.value.field == "currency"


def test_money_in_two_currencies_is_never_equal() -> None:
    # Given the same figure in two currencies
    eur, usd = Money.parse("10.00", "EUR"), Money.parse("10.00", "USD")

    # When they are compared for equality
    same = eur == usd

    # Then they differ
    assert not same


def test_money_zero_has_the_currency_decimals() -> None:
    # Given a currency with three decimals
    # When its zero is built
    zero = Money.zero("KWD")

    # Then it is 0.000 KWD
    assert str(zero) == "0.000 KWD"


# --- Actor -------------------------------------------------------------------------------


def test_actor_person_carries_an_email() -> None:
    # Given a person's email
    # When an actor is built for them
    actor = Actor.person("alice@example.com")

    # Then it is a person with that email
    assert actor.kind == "person"
    assert actor.email == "alice@example.com"


@pytest.mark.parametrize(
    ("build", "kind"),
    [(Actor.system, "system"), (Actor.unknown, "unknown")],
)
def test_actor_system_and_unknown_have_no_email(build: Callable[[], Actor], kind: str) -> None:
    # Given the system or an unknown initiator
    # When its actor is built
    actor = build()

    # Then it has that kind and no email
    assert actor.kind == kind
    assert actor.email is None


@pytest.mark.parametrize("kind", ["system", "unknown"])
def test_actor_that_is_not_a_person_cannot_have_an_email(kind: str) -> None:
    # Given a non-person kind
    # When it is given an email
    with pytest.raises(InvalidValue) as refused:
        Actor(kind, "ops@example.com")  # type: ignore[arg-type]

    # Then it is refused on the initiatedBy field
    assert refused.value.field == "initiatedBy"


def test_actor_person_without_an_email_is_refused() -> None:
    # Given the person kind
    # When it is built without an email
    with pytest.raises(InvalidValue) as refused:
        Actor("person")

    # Then it is refused on the initiatedBy field
    assert refused.value.field == "initiatedBy"


@pytest.mark.parametrize(
    "email",
    ["", "alice.example.com", " alice@example.com", "alice@example.com ", "a@" + "x" * 253],
)
def test_actor_person_with_a_bad_email_is_refused(email: str) -> None:
    # Given something that is not an email address
    # When a person actor is built with it
    with pytest.raises(InvalidValue) as refused:
        Actor.person(email)

    # Then it is refused on the initiatedBy field
    assert refused.value.field == "initiatedBy"


# --- Address -----------------------------------------------------------------------------


def test_address_with_all_fields_is_accepted() -> None:
    # Given the parts of a German address
    # When an address is built
    address = Address("Unter den Linden 1", "Berlin", "10117", "DE", line2="3. OG")

    # Then it keeps them
    assert (address.line1, address.line2, address.city) == ("Unter den Linden 1", "3. OG", "Berlin")
    assert (address.postal_code, address.country) == ("10117", "DE")


@pytest.mark.parametrize("country", ["de", "De", "DEU", "D", "", "ÄB", "12"])
def test_address_country_must_be_an_upper_case_alpha_2_code(country: str) -> None:
    # Given a country that is not an upper-case ISO 3166-1 alpha-2 code
    # When an address is built with it
    with pytest.raises(InvalidValue) as refused:
        Address("Unter den Linden 1", "Berlin", "10117", country)

    # Then it is refused on the country field
    assert refused.value.field == "country"


@pytest.mark.parametrize(
    ("line1", "city", "postal_code", "field"),
    [
        ("", "Berlin", "10117", "line1"),
        ("   ", "Berlin", "10117", "line1"),
        ("Unter den Linden 1", "", "10117", "city"),
        ("Unter den Linden 1", "Berlin", " ", "postalCode"),
    ],
)
def test_address_refuses_empty_required_parts(
    line1: str, city: str, postal_code: str, field: str
) -> None:
    # Given an address with one required part empty
    # When it is built
    with pytest.raises(InvalidValue) as refused:
        Address(line1, city, postal_code, "DE")

    # Then it is refused, naming the (camelCase) field
    assert refused.value.field == field


@pytest.mark.parametrize("amount", ["1e30", "1E+26", "1000000000000000"])
def test_an_absurdly_large_amount_is_refused_as_invalid(amount: str) -> None:
    # Given an amount far beyond any price
    # When it is parsed
    # Then it is an invalid value (a 422), not an arithmetic crash (a 500)
    with pytest.raises(InvalidValue, match="below"):
        Money.parse(amount, "EUR")


def test_trailing_zeros_and_negative_zero_normalise() -> None:
    # Given amounts written with extra zeros, and minus zero
    # When they become money
    # Then they print with the currency's decimals and no sign
    assert str(Money.parse("19.900", "EUR").amount) == "19.90"
    assert str(Money.parse("5.0", "JPY").amount) == "5"
    assert str(Money.parse("-0", "EUR").amount) == "0.00"


def test_an_actor_of_an_unknown_kind_is_refused() -> None:
    # Given a kind that is not person, system or unknown
    # When an actor is made of it
    # Then it is refused
    with pytest.raises(InvalidValue, match="robot"):
        Actor("robot")  # type: ignore[arg-type]


# --- Text for people ---------------------------------------------------------------------


@pytest.mark.parametrize("control", ["\x00", "\x08", "\x1b", "\x7f", "\x85", "\x9f", "\ud800"])
def test_text_for_people_refuses_control_characters_and_lone_surrogates(control: str) -> None:
    # Given a name holding a control character (or a lone surrogate)
    name = f"Bo{control}b"

    # When it is checked as text for people, on one line or several
    for multiline in (False, True):
        with pytest.raises(InvalidValue) as refused:
            check_text("name", name, multiline=multiline)

        # Then it is refused, naming the field, the character and where it is
        assert refused.value.field == "name"
        assert f"U+{ord(control):04X} at position 3" in refused.value.message


def test_only_free_text_takes_tab_and_line_breaks() -> None:
    # Given text over several lines
    text = "first\tline\r\nsecond line\n"

    # Then free text takes it, and one-line text refuses it
    assert check_text("reason", text, multiline=True) == text
    with pytest.raises(InvalidValue):
        check_text("name", text)


def test_text_for_people_keeps_every_other_character() -> None:
    # Given text in many scripts, with emoji and a right-to-left mark
    text = "Zoë ✓ 日本 😀 \u200f שלום"

    # Then it is text for people
    assert check_text("name", text) == text


def test_an_email_given_as_input_is_text_for_people() -> None:
    # Given an email address holding a NUL
    email = "a\x00@b.example"

    # Then it is refused as input, for a person's actor as for any email field
    with pytest.raises(InvalidValue) as refused:
        Actor.person(email)
    assert refused.value.field == "initiatedBy"
    with pytest.raises(InvalidValue):
        check_email(email)


def test_an_actor_recorded_before_the_rule_still_loads() -> None:
    # Given an actor as stored by an earlier version that accepted a NUL in the email
    stored = Actor("person", "a\x00@b.example")

    # Then it is rebuilt as it was recorded: history is not refused after the fact
    assert stored.email == "a\x00@b.example"


def test_an_address_given_as_input_is_text_for_people() -> None:
    # Given an address whose city holds a control character
    address = Address("Main St 1", "Ber\x1blin", "10115", "DE")

    # Then the address is refused as input, naming the line
    with pytest.raises(InvalidValue) as refused:
        address.check_text()
    assert refused.value.field == "city"
