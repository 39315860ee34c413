"""Workflow automations: triggers, conditions and actions run on events (see README)."""

from __future__ import annotations

__all__ = ["Automations", "CompiledWorkflow", "check_workflow", "load_workflow"]

from collections.abc import Iterable, Mapping
from typing import Any

from flowlang.automations.workflow import CompiledWorkflow, check_workflow, load_workflow


class Automations:
    """A set of workflows, indexed by trigger, matched against events.

    An event is a mapping with ``type`` (the trigger name), ``id`` (unique, for deduplication)
    and ``properties``.
    """

    def __init__(self, workflows: Iterable[CompiledWorkflow]) -> None:
        self.workflows = tuple(workflows)
        self._by_trigger: dict[str, list[CompiledWorkflow]] = {}
        for workflow in self.workflows:
            self._by_trigger.setdefault(workflow.trigger, []).append(workflow)

    def match(self, event: Mapping[str, Any]) -> list[CompiledWorkflow]:
        """The workflows whose trigger is the event's type and whose conditions hold."""
        kind = event.get("type") if isinstance(event, Mapping) else None
        candidates = self._by_trigger.get(kind) if isinstance(kind, str) else None
        if not candidates:
            return []
        scope = {"event": event}
        return [w for w in candidates if w.condition is None or w.condition(scope)]
