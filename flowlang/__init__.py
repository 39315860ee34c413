"""flowlang: a flow interpreter for IVR and contact-center engines, with a compiled expression core.

>>> import flowlang
>>> flowlang.render('<<contact.emails[0]>>', {"contact": {"emails": ["ann@example.com"]}})
'ann@example.com'

Public names are imported on first use (module ``__getattr__``), so a process that only
renders templates never loads the runtime (asyncio, httpx, yaml).
"""

from __future__ import annotations

__all__ = [
    "BACKEND",
    "ActionError",
    "AudioError",
    "CallStoreError",
    "CollectorSettings",
    "CompiledFlow",
    "DataLimitError",
    "DocumentError",
    "Engine",
    "EnvironmentSecrets",
    "EventError",
    "EventRefusedError",
    "FlowDocumentError",
    "FlowError",
    "FlowFilterError",
    "FlowLimitError",
    "FlowStateError",
    "FlowSyntaxError",
    "FlowTestWarning",
    "FlowUndefinedError",
    "FlowVersions",
    "Host",
    "JsonSyntaxError",
    "Limits",
    "LineTooLongError",
    "MappingSecrets",
    "MemoryResumeGuard",
    "NullHost",
    "OutputTooLong",
    "PatternError",
    "PurePythonWarning",
    "RecordError",
    "RecordFileError",
    "RecordingHost",
    "Reference",
    "ReplayInProgressError",
    "RequestError",
    "ResumeGuard",
    "RunResult",
    "Runtime",
    "RuntimeSettings",
    "SharedStoreError",
    "SourcePosition",
    "StateKeys",
    "StoreError",
    "Template",
    "UsageError",
    "ValueFormatError",
    "WebhookAuthError",
    "check_flow",
    "check_flow_text",
    "collector_tuned",
    "compile",
    "load_flow",
    "load_flow_text",
    "load_workflow",
    "load_workflow_text",
    "render",
    "restore_collector",
    "run_sync",
    "tune_collector",
]

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowlang.automations import load_workflow, load_workflow_text
    from flowlang.engine import Engine, Template
    from flowlang.errors import (
        ActionError,
        AudioError,
        CallStoreError,
        DataLimitError,
        DocumentError,
        EventError,
        EventRefusedError,
        FlowDocumentError,
        FlowError,
        FlowFilterError,
        FlowLimitError,
        FlowStateError,
        FlowSyntaxError,
        FlowTestWarning,
        FlowUndefinedError,
        JsonSyntaxError,
        LineTooLongError,
        OutputTooLong,
        PatternError,
        PurePythonWarning,
        RecordError,
        RecordFileError,
        ReplayInProgressError,
        RequestError,
        SharedStoreError,
        SourcePosition,
        StoreError,
        UsageError,
        ValueFormatError,
        WebhookAuthError,
    )
    from flowlang.expr.limits import Limits
    from flowlang.expr.references import Reference
    from flowlang.flow.load import check_flow, check_flow_text, load_flow, load_flow_text
    from flowlang.flow.model import CompiledFlow
    from flowlang.runtime.collector import (
        CollectorSettings,
        collector_tuned,
        restore_collector,
        tune_collector,
    )
    from flowlang.runtime.host import Host, NullHost, RecordingHost
    from flowlang.runtime.runner import RunResult, Runtime, RuntimeSettings, run_sync
    from flowlang.runtime.secrets import EnvironmentSecrets, MappingSecrets
    from flowlang.runtime.state import MemoryResumeGuard, ResumeGuard, StateKeys
    from flowlang.runtime.versions import FlowVersions

    #: The evaluator this process uses by default: ``"cython"`` or ``"python"``.
    BACKEND: str

__version__ = "0.1.0"


if "FLOWLANG_REQUIRE_EXTENSIONS" in os.environ:
    # Asked to require the compiled extension (CI): choose the backend now, so that a missing
    # extension is an ImportError at `import flowlang` rather than at first use.
    importlib.import_module("flowlang.expr.backends")

#: Where each public name lives: imported on first use, then kept in this module.
_LAZY: dict[str, str] = {
    "ActionError": "flowlang.errors",
    "AudioError": "flowlang.errors",
    "CallStoreError": "flowlang.errors",
    "EventRefusedError": "flowlang.errors",
    "WebhookAuthError": "flowlang.errors",
    "DataLimitError": "flowlang.errors",
    "DocumentError": "flowlang.errors",
    "EventError": "flowlang.errors",
    "FlowDocumentError": "flowlang.errors",
    "FlowError": "flowlang.errors",
    "FlowFilterError": "flowlang.errors",
    "FlowLimitError": "flowlang.errors",
    "FlowStateError": "flowlang.errors",
    "FlowTestWarning": "flowlang.errors",
    "FlowSyntaxError": "flowlang.errors",
    "FlowUndefinedError": "flowlang.errors",
    "JsonSyntaxError": "flowlang.errors",
    "LineTooLongError": "flowlang.errors",
    "OutputTooLong": "flowlang.errors",
    "PatternError": "flowlang.errors",
    "PurePythonWarning": "flowlang.errors",
    "RecordError": "flowlang.errors",
    "RecordFileError": "flowlang.errors",
    "ReplayInProgressError": "flowlang.errors",
    "RequestError": "flowlang.errors",
    "SharedStoreError": "flowlang.errors",
    "SourcePosition": "flowlang.errors",
    "StoreError": "flowlang.errors",
    "UsageError": "flowlang.errors",
    "ValueFormatError": "flowlang.errors",
    "CollectorSettings": "flowlang.runtime.collector",
    "CompiledFlow": "flowlang.flow.model",
    "Engine": "flowlang.engine",
    "EnvironmentSecrets": "flowlang.runtime.secrets",
    "Host": "flowlang.runtime.host",
    "Limits": "flowlang.expr.limits",
    "MappingSecrets": "flowlang.runtime.secrets",
    "MemoryResumeGuard": "flowlang.runtime.state",
    "FlowVersions": "flowlang.runtime.versions",
    "NullHost": "flowlang.runtime.host",
    "RecordingHost": "flowlang.runtime.host",
    "Reference": "flowlang.expr.references",
    "ResumeGuard": "flowlang.runtime.state",
    "RunResult": "flowlang.runtime.runner",
    "Runtime": "flowlang.runtime.runner",
    "RuntimeSettings": "flowlang.runtime.runner",
    "StateKeys": "flowlang.runtime.state",
    "Template": "flowlang.engine",
    "check_flow": "flowlang.flow.load",
    "check_flow_text": "flowlang.flow.load",
    "load_flow": "flowlang.flow.load",
    "load_flow_text": "flowlang.flow.load",
    "load_workflow": "flowlang.automations",
    "load_workflow_text": "flowlang.automations",
    "run_sync": "flowlang.runtime.runner",
    "collector_tuned": "flowlang.runtime.collector",
    "restore_collector": "flowlang.runtime.collector",
    "tune_collector": "flowlang.runtime.collector",
}


def __getattr__(name: str) -> Any:
    if name == "BACKEND":
        from flowlang.expr.backends import DEFAULT_BACKEND

        value: Any = DEFAULT_BACKEND
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'flowlang' has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(module), name)
        except AttributeError:
            raise AttributeError(
                f"module 'flowlang' has no attribute {name!r} ({module} does not define it)"
            ) from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_default_engines: dict[str, Engine] = {}


def _engine(syntax: str) -> Engine:
    engine = _default_engines.get(syntax)
    if engine is None:
        from flowlang.engine import Engine

        engine = _default_engines.setdefault(syntax, Engine(syntax=syntax))
    return engine


def compile(source: str, *, syntax: str = "flowlang") -> Template:  # noqa: A001
    """Compile a template with the default lenient engine for ``syntax`` (memoized)."""
    engine = _default_engines.get(syntax) or _engine(syntax)
    return engine.compile(source)


def render(source: str, context: Mapping[str, Any], *, syntax: str = "flowlang") -> Any:
    """Compile (memoized) and render a template against ``context``."""
    return compile(source, syntax=syntax).render(context)
