"""Decimals and dates: their text and their order (grammar/SPEC.md section 2, "Decimals" and
"Dates"), read without running any override of a subclass.

flowlang.expr.values applies these to the operators, rendering and JSON; both backends reach
them through it (the compiled one calls values for every kind but the exact built-in ones).
"""

from __future__ import annotations

__all__ = [
    "MAX_DECIMAL_EXPONENT",
    "date_compare",
    "date_text",
    "decimal_text",
    "exact_date",
    "int_digits_at_least",
    "number_compare",
    "zone_runs_code",
]

from datetime import date, datetime, time, timezone
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any
from zoneinfo import ZoneInfo

#: Decimals whose adjusted exponent (the power of ten of their first digit) is within this bound
#: are written positionally (``100``, ``0.0010``); beyond, in scientific notation (``1E+5000``),
#: so that a small value never becomes a huge text.
MAX_DECIMAL_EXPONENT = 1000
#: An integer of at most this many bits (about 4,300 digits, Python's own limit for reading
#: digits) is compared with a decimal exactly; a longer one only when their sizes differ.
_EXACT_INT_BITS = 14_300
#: Comparisons of decimals in a context of our own: exact, no traps, whatever the application
#: set in its thread's context.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, capitals=1, traps=[], flags=[])


def decimal_text(value: Decimal) -> str | None:
    """The text of a finite Decimal: positional with all its digits (``12.50``, ``100`` for
    ``1E+2``, ``0.0000001``) when its adjusted exponent is within :data:`MAX_DECIMAL_EXPONENT`,
    else scientific (``1E+1000000000``); None for NaN and infinity."""
    if type(value) is not Decimal:
        value = Decimal(value)
    if not value.is_finite():
        return None
    if -MAX_DECIMAL_EXPONENT <= value.adjusted() <= MAX_DECIMAL_EXPONENT:
        return format(value, "f")
    return _EXACT.to_sci_string(value)


def _decimal_of(value: Any) -> Decimal | None:
    """A plain number as a Decimal for comparing with one: a float as its shortest text (the
    number as written), so ``0.1`` meets ``Decimal("0.1")``; None for NaN."""
    if isinstance(value, Decimal):
        value = value if type(value) is Decimal else Decimal(value)
        return None if value.is_nan() else value
    if isinstance(value, float):
        value = float.__float__(value)
        if value != value:
            return None
        return Decimal(float.__repr__(value))  # "inf" and "-inf" read as infinities
    return Decimal(value)


def int_digits_at_least(value: int) -> int:
    """A lower bound of the characters of an integer's decimal text (without building it)."""
    return max(1, (int.bit_length(value) * 3) // 10)


def _int_digits_at_most(value: int) -> int:
    """An upper bound of the digits of an integer's decimal text (without building it)."""
    return (int.bit_length(value) * 30103) // 100000 + 1


def _decimal_int_compare(number: Decimal, whole: int) -> int | None:
    """The sign of ``number - whole`` for an integer too long to convert quickly; None when
    the two are of the same size (then both are longer than 4,300 digits: unordered)."""
    if number.is_infinite():
        return -1 if number.is_signed() else 1
    negative = number.is_signed() and not number.is_zero()
    if negative != (whole < 0):
        return -1 if negative else 1
    sign = -1 if negative else 1
    digits = 0 if number.is_zero() else number.adjusted() + 1  # digits before the point
    if digits < int_digits_at_least(whole):
        return -sign
    if digits > _int_digits_at_most(whole):
        return sign
    return None


def number_compare(a: Any, b: Any) -> int | None:
    """The sign of ``a - b`` for two numbers at least one of which is a Decimal; None when
    unordered (NaN, or two numbers too long to compare quickly)."""
    if isinstance(b, int) and int.bit_length(b) > _EXACT_INT_BITS:
        number = _decimal_of(a)
        return None if number is None else _decimal_int_compare(number, int.__int__(b))
    if isinstance(a, int) and int.bit_length(a) > _EXACT_INT_BITS:
        number = _decimal_of(b)
        result = None if number is None else _decimal_int_compare(number, int.__int__(a))
        return None if result is None else -result
    left, right = _decimal_of(a), _decimal_of(b)
    if left is None or right is None:
        return None
    return int(_EXACT.compare(left, right))


# --- dates ------------------------------------------------------------------------------------

_YEAR, _MONTH, _DAY = date.year.__get__, date.month.__get__, date.day.__get__
_HOUR, _MINUTE, _SECOND = datetime.hour.__get__, datetime.minute.__get__, datetime.second.__get__
_MICROSECOND, _FOLD = datetime.microsecond.__get__, datetime.fold.__get__
_ZONE = datetime.tzinfo.__get__
_T_HOUR, _T_MINUTE, _T_SECOND = time.hour.__get__, time.minute.__get__, time.second.__get__
_T_MICROSECOND, _T_FOLD, _T_ZONE = time.microsecond.__get__, time.fold.__get__, time.tzinfo.__get__


def exact_date(value: Any) -> Any:
    """A date, datetime or time of a subclass copied into its exact type through the base
    type's field readers (its properties and methods never run)."""
    kind = type(value)
    if kind is date or kind is datetime or kind is time:
        return value
    if isinstance(value, datetime):
        return datetime(
            _YEAR(value), _MONTH(value), _DAY(value), _HOUR(value), _MINUTE(value),
            _SECOND(value), _MICROSECOND(value), _ZONE(value), fold=_FOLD(value),
        )  # fmt: skip
    if isinstance(value, date):
        return date(_YEAR(value), _MONTH(value), _DAY(value))
    return time(
        _T_HOUR(value), _T_MINUTE(value), _T_SECOND(value), _T_MICROSECOND(value),
        _T_ZONE(value), fold=_T_FOLD(value),
    )  # fmt: skip


def zone_runs_code(value: Any) -> bool:
    """Whether reading a date's offset would run code of its own: a time zone other than
    ``datetime.timezone`` and ``zoneinfo.ZoneInfo`` (exact types, the standard library's)."""
    if isinstance(value, datetime):
        zone = _ZONE(value)
    elif isinstance(value, time):
        zone = _T_ZONE(value)
    else:
        return False
    return zone is not None and type(zone) is not timezone and type(zone) is not ZoneInfo


def date_text(value: Any) -> str | None:
    """ISO 8601 text of a date (``2026-12-01``), datetime (``2026-12-01T09:30:00``, with
    ``.ffffff`` when it has microseconds and ``+01:00`` when it has a time zone) or time
    (``09:30:00``); None when its time zone's own code raised."""
    value = exact_date(value)
    try:
        return str(value.isoformat())
    except Exception:  # a time zone whose utcoffset raised or returned nonsense
        return None


def date_compare(a: Any, b: Any) -> int | None:
    """The order of two dates of one kind (naive with naive, aware with aware by instant);
    None when unordered (different kinds, or a time zone's code raised)."""
    a, b = exact_date(a), exact_date(b)
    if type(a) is not type(b):
        return None
    try:
        if a == b:
            return 0
        return -1 if a < b else 1
    except Exception:  # naive against aware, or a time zone's code raised
        return None
