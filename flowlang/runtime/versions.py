"""Versions: compiled flows kept by fingerprint, so a call resumes on the version it started on."""

from __future__ import annotations

__all__ = ["DEFAULT_FLOW_VERSIONS", "FlowVersions"]

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowlang.flow.model import CompiledFlow

#: How many versions a FlowVersions keeps unless told otherwise.
DEFAULT_FLOW_VERSIONS = 16


class FlowVersions:
    """Compiled flows kept by fingerprint (a hash of the document's text): at most
    ``capacity`` versions of each flow (by its ``flow:`` name).

    Give one to a runtime (``Runtime(flow_versions=FlowVersions())``): every flow a call starts
    on is kept, and a call suspended on one version of a flow resumes on that version after the
    flow was edited and reloaded, while new calls start on the new one. When a flow has more
    than ``capacity`` versions, its least recently used one (added, started on or resumed on)
    is dropped; versions of other flows never push one out. A call waiting on a dropped version
    cannot resume (FlowStateError, naming the version). Versions another process started calls
    on can be added with :meth:`add`.

    Safe to share between runtimes and threads. A state only selects among the versions kept
    here, and only after its signature is checked: it never makes anything load.
    """

    __slots__ = ("_by_name", "_flows", "_latest", "_lock", "capacity")

    def __init__(self, capacity: int = DEFAULT_FLOW_VERSIONS) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"FlowVersions capacity must be a positive integer, not {capacity!r}")
        self.capacity = capacity
        self._flows: dict[str, CompiledFlow] = {}
        #: Each flow name's fingerprints, least recently used first.
        self._by_name: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()
        #: The most recently used flow, never dropped (a start on it again needs no lock).
        self._latest: CompiledFlow | None = None

    def add(self, flow: CompiledFlow) -> CompiledFlow:
        """Keep ``flow`` (as the most recently used version of its flow) and return it."""
        if self._latest is flow:
            return flow
        fingerprint = flow.fingerprint
        with self._lock:
            self._flows[fingerprint] = flow
            versions = self._by_name.setdefault(flow.name, OrderedDict())
            versions[fingerprint] = None
            versions.move_to_end(fingerprint)
            while len(versions) > self.capacity:
                dropped, _ = versions.popitem(last=False)
                del self._flows[dropped]
            self._latest = flow
        return flow

    def get(self, fingerprint: str) -> CompiledFlow | None:
        """The version whose fingerprint is ``fingerprint`` (now the most recently used of its
        flow), or None when it is not kept."""
        with self._lock:
            flow = self._flows.get(fingerprint)
            if flow is not None:
                self._by_name[flow.name].move_to_end(fingerprint)
                self._latest = flow
            return flow

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._flows

    def __len__(self) -> int:
        return len(self._flows)

    def fingerprints(self, name: str) -> list[str]:
        """The fingerprints of the versions of flow ``name`` kept, least recently used first."""
        with self._lock:
            return list(self._by_name.get(name, ()))
