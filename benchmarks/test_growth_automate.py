"""Growth with events (issue 14): time and peak traced memory of ``flowlang automate
--responses --json`` (offline, simulated time) run in this process, from 1,000 to 100,000
events of one delivered request each. ``make bench-growth``.

Memory is flat but for the ids that duplicates are recognised by, which stay until
``max_remembered_events`` (100,000) of them are kept.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from growth import measure_curve, print_curve
from test_automations_memory import offline_automate, offline_files

SIZES = (1_000, 10_000, 100_000)


def _check(size: int, summary: dict[str, Any]) -> None:
    assert summary["events"] == summary["delivered"] == size and summary["exit"] == 0


def test_offline_automate_with_events(benchmark: Any, request: pytest.FixtureRequest) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        curve = benchmark.pedantic(
            lambda: measure_curve(
                "flowlang automate --responses, one delivered request per event",
                "events",
                SIZES,
                lambda size: offline_files(base / str(size), size),
                offline_automate,
                rounds=1,
                memory=True,
                check=_check,
            ),
            rounds=1,
        )
    benchmark.group = "growth: events"
    print_curve(request, curve)
