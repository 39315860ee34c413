"""Collector: an opt-in tuning of CPython's cyclic garbage collector for many live runs.

A run creates no reference cycles (tests/test_collector.py checks it on both loops), so the
cyclic collector finds nothing to free in flowlang's objects; but each of its passes walks every
container still alive, and with 100,000 suspended runs held by an application those walks make
starting a run several times slower. ``tune_collector`` freezes what is alive when it is called
(imports, loaded flows: the collector no longer walks them) and raises the first generation's
threshold so that passes come less often. Nothing changes unless it is called: an embedding
engine owns its process and its collector. The previous settings are returned, and
``restore_collector`` puts them back.
"""

from __future__ import annotations

__all__ = [
    "RUNTIME_THRESHOLD",
    "CollectorSettings",
    "collector_settings",
    "collector_tuned",
    "restore_collector",
    "tune_collector",
]

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: The first generation's threshold ``tune_collector`` sets by default: allocations (less
#: deallocations) of container objects between two young passes (CPython's default is 700).
RUNTIME_THRESHOLD = 10_000


@dataclass(frozen=True)
class CollectorSettings:
    """What ``tune_collector`` changes: whether the collector runs, its three thresholds, and
    how many objects were frozen (in the permanent generation, never walked)."""

    enabled: bool
    thresholds: tuple[int, int, int]
    frozen: int


def collector_settings() -> CollectorSettings:
    """The collector's settings now."""
    first, second, third = gc.get_threshold()
    return CollectorSettings(gc.isenabled(), (first, second, third), gc.get_freeze_count())


def tune_collector(*, threshold: int = RUNTIME_THRESHOLD, freeze: bool = True) -> CollectorSettings:
    """Tune the collector for a process that holds many live runs; returns the settings before.

    ``freeze``: collect once, then move every object alive now to the permanent generation
    (call it after loading flows and a warm-up run, so that they are among them).
    ``threshold``: the first generation's threshold (a whole number from 1; the older
    generations' thresholds are kept). The collector stays enabled: cycles made by an
    application's own code are still freed.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ValueError(f"threshold: a whole number from 1, not {threshold!r}")
    before = collector_settings()
    if freeze:
        gc.collect()
        gc.freeze()
    _, second, third = before.thresholds
    gc.set_threshold(threshold, second, third)
    return before


def restore_collector(previous: CollectorSettings) -> None:
    """Put back settings returned by ``tune_collector`` (or ``collector_settings``).

    Objects frozen since are unfrozen when ``previous`` had none frozen (CPython cannot unfreeze
    only some of them; with objects frozen before, the permanent generation is left as it is).
    """
    gc.set_threshold(*previous.thresholds)
    if previous.frozen == 0 and gc.get_freeze_count():
        gc.unfreeze()
    if previous.enabled:
        gc.enable()
    else:
        gc.disable()


@contextmanager
def collector_tuned(
    *, threshold: int = RUNTIME_THRESHOLD, freeze: bool = True
) -> Iterator[CollectorSettings]:
    """``tune_collector`` for the body of a ``with``, restored at its end; gives the settings
    before."""
    previous = tune_collector(threshold=threshold, freeze=freeze)
    try:
        yield previous
    finally:
        restore_collector(previous)
