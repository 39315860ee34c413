"""flowlang: a flow interpreter for IVR and contact-center engines, with a compiled expression core.

>>> import flowlang
>>> flowlang.render('<<contact.emails[0]>>', {"contact": {"emails": ["ann@example.com"]}})
'ann@example.com'
"""

from __future__ import annotations

__all__ = [
    "BACKEND",
    "CompiledFlow",
    "Engine",
    "EnvironmentSecrets",
    "FlowDocumentError",
    "FlowError",
    "FlowFilterError",
    "FlowLimitError",
    "FlowStateError",
    "FlowSyntaxError",
    "FlowUndefinedError",
    "Host",
    "Limits",
    "MappingSecrets",
    "MemoryResumeGuard",
    "NullHost",
    "RecordingHost",
    "Reference",
    "ResumeGuard",
    "RunResult",
    "Runtime",
    "RuntimeSettings",
    "SourcePosition",
    "StateKeys",
    "Template",
    "check_flow",
    "check_flow_text",
    "compile",
    "load_flow",
    "load_flow_text",
    "render",
    "run_sync",
]

from collections.abc import Mapping
from typing import Any

from flowlang.engine import Engine, Template
from flowlang.errors import (
    FlowError,
    FlowFilterError,
    FlowLimitError,
    FlowSyntaxError,
    FlowUndefinedError,
    SourcePosition,
)
from flowlang.expr.backends import DEFAULT_BACKEND
from flowlang.expr.limits import Limits
from flowlang.expr.references import Reference
from flowlang.flow import check_flow, check_flow_text, load_flow, load_flow_text
from flowlang.flow.model import CompiledFlow, FlowDocumentError
from flowlang.runtime.host import Host, NullHost, RecordingHost
from flowlang.runtime.runner import RunResult, Runtime, RuntimeSettings, run_sync
from flowlang.runtime.secrets import EnvironmentSecrets, MappingSecrets
from flowlang.runtime.state import FlowStateError, MemoryResumeGuard, ResumeGuard, StateKeys

__version__ = "0.1.0"

#: The evaluator this process uses by default: ``"cython"`` or ``"python"``.
BACKEND: str = DEFAULT_BACKEND

_default_engines: dict[str, Engine] = {}


def _engine(syntax: str) -> Engine:
    engine = _default_engines.get(syntax)
    if engine is None:
        engine = _default_engines.setdefault(syntax, Engine(syntax=syntax))
    return engine


def compile(source: str, *, syntax: str = "flowlang") -> Template:  # noqa: A001
    """Compile a template with the default lenient engine for ``syntax`` (memoized)."""
    engine = _default_engines.get(syntax) or _engine(syntax)
    return engine.compile(source)


def render(source: str, context: Mapping[str, Any], *, syntax: str = "flowlang") -> Any:
    """Compile (memoized) and render a template against ``context``."""
    return compile(source, syntax=syntax).render(context)
