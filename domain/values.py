"""Value objects shared by the store aggregates: money, the actor of a command, addresses.

Values are immutable and validate themselves on construction, so an aggregate never holds
an amount with the wrong number of decimals or a currency that does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from domain.errors import InvalidValue

# Text for people (names, emails, reasons, descriptions, addresses, codes) never holds a
# control character (Unicode category Cc: C0, DEL and C1) or a lone surrogate: they make
# nothing readable, some stores refuse them (PostgreSQL text cannot hold U+0000) and
# terminals obey them. Descriptions and reasons may run over several lines: tab, line
# feed and carriage return are allowed there, and only there. One definition, written in
# the regular expression syntax JSON Schema and Python share, so the API's published
# patterns (infrastructure/api/schemas.py) are these very classes. Surrogates are left
# out of the published patterns: without the `u` flag an ECMAScript class would match
# the halves of every emoji; the API refuses them while reading the body.
_CONTROLS = "\\u0000-\\u001f\\u007f-\\u009f"
_CONTROLS_BUT_LINE_BREAKS = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f"
_SURROGATES = "\\ud800-\\udfff"
TEXT_PATTERN = f"^[^{_CONTROLS}]*$"
MULTILINE_TEXT_PATTERN = f"^[^{_CONTROLS_BUT_LINE_BREAKS}]*$"
_FORBIDDEN = re.compile(f"[{_CONTROLS}{_SURROGATES}]")
_FORBIDDEN_MULTILINE = re.compile(f"[{_CONTROLS_BUT_LINE_BREAKS}{_SURROGATES}]")
# A name (of a customer, product, city, SKU code, attribute…) is not blank: it has a
# character that is neither a control nor white space (the characters Python's
# str.isspace knows, spelled out, as JSON Schema's `\s` differs between engines).
_BLANKS = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NAME_PATTERN = f"^[^{_CONTROLS}]*[^{_CONTROLS}{_BLANKS}][^{_CONTROLS}]*$"
_VISIBLE = re.compile(f"[^{_CONTROLS}{_BLANKS}{_SURROGATES}]")
# An email address's shape: no white space, one @, a dot in the domain with something on
# both sides. Published as this pattern (with TEXT_PATTERN) and checked as it.
_NOT_IN_EMAIL = "@\\u0009-\\u000d "
EMAIL_PATTERN = f"^[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}]+\\.[^{_NOT_IN_EMAIL}]+$"
_EMAIL = re.compile(EMAIL_PATTERN.removesuffix("$") + "\\Z")


def text_problem(text: str, *, multiline: bool = False) -> str | None:
    """Why ``text`` is no text for people, or None when it is."""
    found = (_FORBIDDEN_MULTILINE if multiline else _FORBIDDEN).search(text)
    if found is None:
        return None
    code = ord(found.group())
    what = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    allowed = " (tab and line breaks are allowed)" if multiline else ""
    return f"must not contain {what}{allowed}: U+{code:04X} at position {found.start() + 1}"


def check_text(field: str, text: str, *, multiline: bool = False) -> str:
    """``text`` if it is text for people (see above), else `InvalidValue` naming ``field``."""
    problem = text_problem(text, multiline=multiline)
    if problem is not None:
        raise InvalidValue(field, problem)
    return text


def check_name(field: str, text: str) -> str:
    """``text`` if it is text for people and not blank (see NAME_PATTERN)."""
    if not _VISIBLE.search(check_text(field, text)):
        raise InvalidValue(field, "must not be empty")
    return text


# Active ISO 4217 codes. Minor units are 2 except where _MINOR_UNITS says otherwise.
CURRENCIES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW
    ZWL
    """.split()
)
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}


def check_currency(code: str) -> str:
    if code not in CURRENCIES:
        raise InvalidValue("currency", f"{code!r} is not an ISO 4217 currency code")
    return code


# Far above any real price, far below where decimal arithmetic would overflow.
MAX_AMOUNT = Decimal("1e15")


def check_email(email: str, field: str = "email") -> str:
    """An email address given as input: text for people, shaped like an address."""
    check_text(field, email)
    if not _EMAIL.match(email) or len(email) > 254:
        raise InvalidValue(field, f"{email!r} is not an email address")
    return email


def _check_email_shape(email: str, field: str) -> str:
    """What every version's rule for emails had in common: a non-empty local part before
    an @ (a stored actor was checked, when recorded, by the rule of its day)."""
    if "@" not in email[1:]:
        raise InvalidValue(field, f"{email!r} is not an email address")
    return email


def amount_pattern(decimals: int) -> str:
    """The amounts of a currency with this many decimals, as text: up to 15 digits, and
    at most ``decimals`` decimals that are not trailing zeros (up to 4 decimals in all)."""
    digits = "^[0-9]{1,15}"
    if decimals == 0:
        return digits + "(\\.0{1,4})?$"
    return digits + f"(\\.[0-9]{{1,{decimals}}}0{{0,{4 - decimals}}})?$"


def currencies_by_decimals() -> dict[int, list[str]]:
    """Every currency, grouped by its number of decimals."""
    groups: dict[int, list[str]] = {}
    for code in sorted(CURRENCIES):
        groups.setdefault(minor_units(code), []).append(code)
    return groups


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


@dataclass(frozen=True)
class Money:
    """A decimal amount in one currency, never negative, with the currency's decimals."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise InvalidValue("amount", "an amount must be a finite decimal number")
        if self.amount < 0:
            raise InvalidValue("amount", f"an amount cannot be negative (got {self.amount})")
        if self.amount >= MAX_AMOUNT:
            raise InvalidValue("amount", f"an amount must be below {MAX_AMOUNT:,.0f}")
        # Normalise "19.9" and "19.900" to "19.90" (and -0 to 0), so equal amounts always
        # print the same way; refuse what the currency cannot express ("19.905 EUR").
        quantum = Decimal(1).scaleb(-minor_units(self.currency))
        normalised = self.amount.quantize(quantum) + 0
        if normalised != self.amount:
            raise InvalidValue(
                "amount",
                f"{self.currency} amounts have at most {minor_units(self.currency)} decimals "
                f"(got {self.amount})",
            )
        object.__setattr__(self, "amount", normalised)

    @classmethod
    def parse(cls, amount: str, currency: str) -> Money:
        """Money from its JSON form, where the amount is a string such as ``"19.90"``."""
        try:
            value = Decimal(amount)
        except (InvalidOperation, TypeError, ValueError):
            raise InvalidValue("amount", f"{amount!r} is not a decimal amount") from None
        return cls(value, currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def __add__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, quantity: int) -> Money:
        return Money(self.amount * quantity, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check_same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._check_same_currency(other)
        return self.amount <= other.amount

    def _check_same_currency(self, other: Money) -> None:
        if self.currency != other.currency:
            raise InvalidValue(
                "currency", f"cannot combine {self.currency} and {other.currency} amounts"
            )

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


ActorKind = Literal["person", "system", "unknown"]


@dataclass(frozen=True)
class Actor:
    """Who initiated a command: a person (by email), the system, or nobody we know of.

    The envelope's ``initiatedBy`` is the email for a person, ``null`` for the system, and
    absent when unknown (events recorded without actor information).
    """

    kind: ActorKind
    email: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("person", "system", "unknown"):
            raise InvalidValue("initiatedBy", f"{self.kind!r} is not a kind of actor")
        if (self.kind == "person") != (self.email is not None):
            raise InvalidValue("initiatedBy", "only a person has an email")
        if self.email is not None:
            # The shape only: actors are rebuilt from stored events, which keep what was
            # accepted when they were recorded. New input goes through `person`.
            _check_email_shape(self.email, "initiatedBy")

    @classmethod
    def person(cls, email: str) -> Actor:
        """A person named by new input: their email must be text for people too."""
        return cls("person", check_email(email, "initiatedBy"))

    @classmethod
    def system(cls) -> Actor:
        return cls("system")

    @classmethod
    def unknown(cls) -> Actor:
        return cls("unknown")


@dataclass(frozen=True)
class Address:
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None

    def __post_init__(self) -> None:
        for name in ("line1", "city", "postal_code"):
            if not getattr(self, name).strip():
                raise InvalidValue(_camel(name), "must not be empty")
        if (
            len(self.country) != 2
            or not self.country.isascii()
            or not self.country.isalpha()
            or not self.country.isupper()
        ):
            raise InvalidValue("country", "must be an ISO 3166-1 alpha-2 code such as 'DE'")

    def check_text(self) -> Address:
        """This address, if every line of it is text for people, and those it needs are
        not blank (new input; stored addresses are not checked again)."""
        for name in ("line1", "city", "postal_code"):
            check_name(_camel(name), getattr(self, name))
        if self.line2 is not None:
            check_text("line2", self.line2)
        return self


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
