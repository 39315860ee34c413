"""Flows: call-flow documents, loaded, checked and compiled (see flowlang.flow.load).

The names below are imported on first use, so that a module of this package (the model, the
field declarations) can be imported without loading the step kinds and the builder.
"""

from __future__ import annotations

__all__ = [
    "CompiledFlow",
    "FlowDocumentError",
    "check_flow",
    "check_flow_text",
    "load_flow",
    "load_flow_text",
]

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowlang.flow.load import check_flow, check_flow_text, load_flow, load_flow_text
    from flowlang.flow.model import CompiledFlow, FlowDocumentError

_HOMES = {
    "CompiledFlow": "flowlang.flow.model",
    "FlowDocumentError": "flowlang.flow.model",
    "check_flow": "flowlang.flow.load",
    "check_flow_text": "flowlang.flow.load",
    "load_flow": "flowlang.flow.load",
    "load_flow_text": "flowlang.flow.load",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flowlang.flow' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
