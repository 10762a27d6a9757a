"""Errors raised by the store domain when a command breaks a business rule.

DomainError
├── InvalidValue            a value that can never be right (bad currency, negative
│                           quantity); the API answers 422 and names the field
└── RuleViolation           a command that is wrong *now*, given the entity's state;
    │                       the API answers 409
    ├── InvalidTransition       order status or subscription state machine
    ├── PaymentExceedsDue       paying more than the amount still due
    ├── RefundExceedsPaid       refunding more than was paid
    ├── InsufficientStock       stock would go negative
    ├── ForeignReference        a reference to an entity of another store
    └── CustomerDeletionRequested   profile changes after a deletion request
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every business-rule error."""


class InvalidValue(DomainError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RuleViolation(DomainError):
    """The command is not allowed in the entity's current state."""


class InvalidTransition(RuleViolation):
    pass


class PaymentExceedsDue(RuleViolation):
    pass


class RefundExceedsPaid(RuleViolation):
    pass


class InsufficientStock(RuleViolation):
    pass


class ForeignReference(RuleViolation):
    pass


class CustomerDeletionRequested(RuleViolation):
    pass
