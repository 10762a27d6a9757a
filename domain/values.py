"""Value objects shared by the store aggregates: money, the actor of a command, addresses.

Values are immutable and validate themselves on construction, so an aggregate never holds
an amount with the wrong number of decimals or a currency that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from domain.errors import InvalidValue

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
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > 254 or email != email.strip():
        raise InvalidValue(field, f"{email!r} is not an email address")
    return email


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
            check_email(self.email, "initiatedBy")

    @classmethod
    def person(cls, email: str) -> Actor:
        return cls("person", email)

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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
