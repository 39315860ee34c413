"""Matching throughput: 1,000 workflows against 100,000 events, conditions on the compiled core,
against a hand-written Python matcher doing the same checks (matches checked equal first)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from flowlang.automations import Automations, load_workflow_text
from flowlang.automations.triggers import TRIGGERS

WORKFLOWS, EVENTS = 1_000, 100_000
TRIGGER_NAMES = sorted(TRIGGERS)
DIRECTIONS = ["inbound", "outbound"]
TAGS = ["Vip", "CampaignA", "Churn", "Lead"]


def _condition(rng: random.Random) -> tuple[str, str, Any]:
    kind = rng.randrange(5)
    if kind == 0:
        return "answered", "equals", rng.choice([True, False])
    if kind == 1:
        return "waiting_time", rng.choice(["greater_than", "less_than"]), rng.randrange(0, 300)
    if kind == 2:
        return "direction", rng.choice(["equals", "not_equals"]), rng.choice(DIRECTIONS)
    if kind == 3:
        return "tags", rng.choice(["contains", "not_contains"]), rng.choice(TAGS)
    return "name", "starts_with", rng.choice(["A", "B", "C"])


def _workflows(rng: random.Random) -> list[tuple[str, list[tuple[str, str, Any]]]]:
    return [
        (rng.choice(TRIGGER_NAMES), [_condition(rng) for _ in range(rng.randint(1, 3))])
        for _ in range(WORKFLOWS)
    ]


def _events(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "id": f"e{n}",
            "type": rng.choice(TRIGGER_NAMES),
            "properties": {
                "answered": rng.random() < 0.5,
                "waiting_time": rng.randrange(0, 300),
                "direction": rng.choice(DIRECTIONS),
                "tags": rng.sample(TAGS, rng.randint(0, 2)),
                "name": rng.choice(["Ann", "Bob", "Cid", "Dee"]),
            },
        }
        for n in range(EVENTS)
    ]


def _document(index: int, trigger: str, checks: list[tuple[str, str, Any]]) -> str:
    rows = [
        {"property": f"<<event.properties.{prop}>>", "operator": op, "value": value}
        for prop, op, value in checks
    ]
    return json.dumps(
        {
            "workflow": f"w{index}",
            "trigger": trigger,
            "conditions": rows,
            "actions": [
                {
                    "name": "notify",
                    "type": "slack_notification",
                    "token": "t",
                    "channel": "c",
                    "text": "x",
                }
            ],
        }
    )


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda a, b: a == b and type(a) is type(b),
    "not_equals": lambda a, b: not (a == b and type(a) is type(b)),
    "greater_than": lambda a, b: isinstance(a, int) and a > b,
    "less_than": lambda a, b: isinstance(a, int) and a < b,
    "contains": lambda a, b: isinstance(a, list) and b in a,
    "not_contains": lambda a, b: not (isinstance(a, list) and b in a),
    "starts_with": lambda a, b: isinstance(a, str) and a.startswith(b),
}


class HandWritten:
    """What one would write by hand: workflows by trigger, each a list of checks."""

    def __init__(self, workflows: list[tuple[str, list[tuple[str, str, Any]]]]) -> None:
        self.by_trigger: dict[
            str, list[tuple[int, list[tuple[str, Callable[[Any, Any], bool], Any]]]]
        ] = {}
        for index, (trigger, checks) in enumerate(workflows):
            compiled = [(prop, _TESTS[op], value) for prop, op, value in checks]
            self.by_trigger.setdefault(trigger, []).append((index, compiled))

    def match(self, event: dict[str, Any]) -> list[int]:
        properties = event["properties"]
        matched = []
        for index, checks in self.by_trigger.get(event["type"], ()):
            for prop, test, value in checks:
                if not test(properties.get(prop), value):
                    break
            else:
                matched.append(index)
        return matched


@pytest.fixture(scope="module")
def scenario() -> tuple[Automations, HandWritten, list[dict[str, Any]]]:
    rng = random.Random(20261121)
    specs = _workflows(rng)
    automations = Automations(
        load_workflow_text(_document(i, t, c)) for i, (t, c) in enumerate(specs)
    )
    return automations, HandWritten(specs), _events(rng)


@pytest.mark.parametrize("contender", ["baseline", "flowlang"])
def test_matching(benchmark: Any, scenario: Any, contender: str) -> None:
    automations, hand_written, events = scenario
    index = {id(workflow): int(workflow.name[1:]) for workflow in automations.workflows}
    for event in events[:5000]:
        ours = [index[id(w)] for w in automations.match(event)]
        assert ours == hand_written.match(event), event
    match = hand_written.match if contender == "baseline" else automations.match

    def run_all() -> int:
        return sum(len(match(event)) for event in events)

    total = benchmark.pedantic(run_all, rounds=3, iterations=1)
    assert total > 0
    benchmark.group = "A1 matching"
    benchmark.extra_info.update(
        workload="A1 matching 1k workflows x 100k events", contender=contender, batch=EVENTS
    )
