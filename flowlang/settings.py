"""Settings checks: every number a configuration object holds is of its kind and in range."""

from __future__ import annotations

__all__ = ["MAX_COUNT", "check_counts", "check_durations", "check_names"]

import math
from typing import Any

#: The largest count any setting may hold (compiled code keeps counts in 64-bit integers).
MAX_COUNT = 2**62


def check_counts(settings: Any, names: tuple[str, ...], minimum: int = 1) -> None:
    """ValueError unless each named field is an int from ``minimum`` to MAX_COUNT."""
    for name in names:
        value = getattr(settings, name)
        if type(value) is not int or not minimum <= value <= MAX_COUNT:
            kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
            raise ValueError(f"{type(settings).__name__}.{name} must be {kind}, not {value!r}")


def check_durations(settings: Any, names: tuple[str, ...], *, zero: bool = False) -> None:
    """ValueError unless each named field is a number of seconds above zero (or from zero)."""
    for name in names:
        value = getattr(settings, name)
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if (
                type(item) not in (int, float)
                or math.isnan(item)
                or item < 0
                or (item == 0 and not zero)
            ):
                bound = "zero or more" if zero else "more than zero"
                raise ValueError(
                    f"{type(settings).__name__}.{name} must be seconds, {bound}, not {value!r}"
                )


def check_names(settings: Any, names: tuple[str, ...]) -> None:
    """ValueError unless each named field is a tuple of non-empty texts."""
    for name in names:
        value = getattr(settings, name)
        if type(value) is not tuple or not all(type(item) is str and item for item in value):
            raise ValueError(
                f"{type(settings).__name__}.{name} must be a tuple of names, not {value!r}"
            )
