"""Workflow automations: triggers, conditions and actions delivered at least once (see README)."""

from __future__ import annotations

__all__ = [
    "Automations",
    "CompiledWorkflow",
    "Dead",
    "DeadLetterStore",
    "Delivered",
    "Delivery",
    "DeliverySettings",
    "DispatchResult",
    "Executor",
    "LocalExecutor",
    "LocalStore",
    "Providers",
    "RetryAt",
    "SpeechSettings",
    "check_provider_url",
    "check_workflow",
    "check_workflow_text",
    "load_workflow",
    "load_workflow_text",
]

from flowlang.automations.actions import Providers, check_provider_url
from flowlang.automations.dispatch import (
    Automations,
    DeadLetterStore,
    Delivery,
    DeliverySettings,
    DispatchResult,
)
from flowlang.automations.executor import Dead, Delivered, Executor, LocalExecutor, RetryAt
from flowlang.automations.speech import SpeechSettings
from flowlang.automations.store import LocalStore
from flowlang.automations.workflow import (
    CompiledWorkflow,
    check_workflow,
    check_workflow_text,
    load_workflow,
    load_workflow_text,
)
