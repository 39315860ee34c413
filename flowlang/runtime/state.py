"""State: what a suspended run carries, the limits on run data, signing, and resume-once.

A state is plain JSON that any JSON library reads back unchanged: maps with text keys, lists,
text (valid Unicode), integers within 64 bits, finite numbers, booleans and null, nested at
most ``max_data_depth`` levels under each root of the scope, and about ``max_state_size``
bytes in all. The runtime keeps run data within these bounds where it enters a run: the
context at start, every value a ``set_variables`` step stores, every HTTP record, and the
state given to resume; nothing can fail later, when the run suspends.

With state keys (``RuntimeSettings.state_keys``) every state is signed (HMAC-SHA256 over its
canonical JSON, the key's id in ``key_id``) and a state that is unsigned, altered or signed
with an unknown key is refused. Every suspension carries ``run_id`` (unique, one per run),
``seq`` (1, 2, … per suspension of that run) and ``suspended_at`` (Unix seconds); a resume
guard lets each be resumed once, and a state older than ``max_state_age`` is refused.
``secrets_used`` names (never holds) the secrets the run has used, at most MAX_SECRETS_USED:
the resumed run looks them up again, so that a value sent before the suspension and echoed
after it is masked.
"""

from __future__ import annotations

__all__ = [
    "STATE_FORMAT",
    "STATE_ROOTS",
    "FlowStateError",
    "MemoryResumeGuard",
    "Resumable",
    "ResumeGuard",
    "StateKeys",
    "canonical_state",
    "make_state",
    "new_run_id",
    "read_state",
]

import base64
import hashlib
import hmac
import itertools
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from flowlang.errors import FlowStateError
from flowlang.rundata import data_problem, measure
from flowlang.runtime.secrets import MAX_SECRETS_USED, is_secret_name
from flowlang.settings import MAX_COUNT

if TYPE_CHECKING:
    from flowlang.flow.model import CompiledFlow, Step
    from flowlang.runtime.secrets import SecretsProvider
    from flowlang.runtime.versions import FlowVersions

STATE_FORMAT = "flowlang.run/2"
#: Roots a state's scope carries that must be maps (absent ones start empty).
STATE_ROOTS = ("vars", "input", "steps")
#: What a run id is made of (safe as a key in any store a resume guard uses).
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_SIGNING_DOMAIN = STATE_FORMAT.encode() + b"\0"


# --- signing ------------------------------------------------------------------------------------


def canonical_state(state: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the state without ``signature``, keys sorted, compact."""
    unsigned = {key: value for key, value in state.items() if key != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def _key_id(key: bytes) -> str:
    return hmac.new(key, b"flowlang state key id", hashlib.sha256).hexdigest()[:16]


class StateKeys:
    """The keys that sign and verify states: the first signs, any verifies (rotation).

    Each key is at least 32 bytes; its id (stored in the state as ``key_id``) is derived from
    the key, so it names the key without revealing it.
    """

    __slots__ = ("_by_id", "_signing")

    def __init__(self, keys: Sequence[bytes | str]) -> None:
        values = [key.encode() if isinstance(key, str) else bytes(key) for key in keys]
        if not values:
            raise ValueError("StateKeys needs at least one key")
        for value in values:
            if len(value) < 32:
                raise ValueError("a state key must be at least 32 bytes (random, from a vault)")
        self._signing = (_key_id(values[0]), values[0])
        self._by_id = {_key_id(value): value for value in reversed(values)}

    @classmethod
    def from_provider(cls, names: Sequence[str], provider: SecretsProvider) -> StateKeys:
        """The keys the secrets named ``names`` hold (newest first); ValueError if one is unset."""
        values = []
        for name in names:
            value = provider.get(name)
            if not value:
                raise ValueError(f"state key {name!r} is not set ({provider.describe(name)})")
            values.append(value)
        return cls(values)

    @staticmethod
    def _mac(key: bytes, state: Mapping[str, Any]) -> str:
        digest = hmac.new(key, _SIGNING_DOMAIN + canonical_state(state), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with ``key_id`` and ``signature`` set (in place)."""
        key_id, key = self._signing
        state.pop("signature", None)
        state["key_id"] = key_id
        state["signature"] = self._mac(key, state)
        return state

    def verify(self, state: Mapping[str, Any]) -> None:
        """FlowStateError unless ``state`` is signed, with a known key, and unaltered."""
        key_id, signature = state.get("key_id"), state.get("signature")
        if type(key_id) is not str or type(signature) is not str:
            raise FlowStateError("the state is not signed; this runtime resumes signed states only")
        key = self._by_id.get(key_id)
        if key is None:
            raise FlowStateError(
                "the state is signed with a key this runtime does not have "
                f"(key id {key_id[:40]!r})"
            )
        try:
            expected = self._mac(key, state)
        except Exception:  # not JSON data at all: it cannot be what was signed
            raise FlowStateError("the state was altered: its signature does not match") from None
        if not signature.isascii() or not hmac.compare_digest(expected, signature):
            raise FlowStateError("the state was altered: its signature does not match")


# --- resume once --------------------------------------------------------------------------------


class ResumeGuard(Protocol):
    """Where consumed suspensions are remembered, so that each state is resumed once.

    ``claim(run_id, seq)`` returns True the first time it is called for a suspension and
    False after; it must also refuse a ``seq`` lower than one already claimed for the run
    (an older state of a run that went on). A store shared by several processes implements
    it atomically (for example ``SET run:{run_id} {seq}`` only if the stored seq is lower).
    """

    def claim(self, run_id: str, seq: int) -> bool:
        """True if suspension ``seq`` of run ``run_id`` may be resumed now (and never again)."""


class MemoryResumeGuard:
    """The default guard: the last claimed ``seq`` of the ``capacity`` most recent runs, in
    this process. A run pushed out (after ``capacity`` newer runs) could be resumed again:
    processes that share states use a guard backed by their store."""

    __slots__ = ("_lock", "_runs", "capacity")

    def __init__(self, capacity: int = 100_000) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(
                f"MemoryResumeGuard capacity must be a positive integer, not {capacity!r}"
            )
        self.capacity = capacity
        self._runs: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, run_id: str, seq: int) -> bool:
        with self._lock:
            last = self._runs.get(run_id)
            if last is not None and seq <= last:
                return False
            self._runs[run_id] = seq
            self._runs.move_to_end(run_id)
            if len(self._runs) > self.capacity:
                self._runs.popitem(last=False)
            return True


#: Run ids: a random prefix per process (renewed in a forked child) and a counter; unique
#: without a system call per run (what makes a state unforgeable is its signature).
_run_ids: list[Any] = []


def _renew_run_ids() -> None:
    _run_ids[:] = [secrets.token_urlsafe(12), itertools.count(1)]


_renew_run_ids()
os.register_at_fork(after_in_child=_renew_run_ids)


def new_run_id() -> str:
    """A fresh run id, unique across processes (a random 96-bit prefix and a counter)."""
    prefix, counter = _run_ids
    return f"{prefix}.{next(counter):x}"


# --- making and reading states -----------------------------------------------------------------


def make_state(
    flow: CompiledFlow,
    waiting_at: str,
    run_id: str,
    seq: int,
    counters: tuple[int, tuple[str | None, int]],
    scope: dict[str, Any],
    keys: StateKeys | None,
    secrets_used: list[str] | None = None,
) -> dict[str, Any]:
    """The state of a run suspended at ``waiting_at`` (``scope`` already plain and masked;
    ``secrets_used``: the names, never the values, of the secrets the run has used)."""
    steps_run, (last, count) = counters
    state = {
        "format": STATE_FORMAT,
        "flow": flow.name,
        "fingerprint": flow.fingerprint,
        "run_id": run_id,
        "seq": seq,
        "suspended_at": int(time.time()),
        "waiting_at": waiting_at,
        "steps_run": steps_run,
        "streak": [last, count],
        "scope": scope,
        "secrets_used": sorted(secrets_used or ()),
    }
    return keys.sign(state) if keys is not None else state


class Resumable(NamedTuple):
    """What a checked state resumes: the flow version and step, its scope and counters, its
    suspension."""

    flow: CompiledFlow
    step: Step
    scope: dict[str, Any]
    counters: tuple[int, tuple[str | None, int]]
    run_id: str
    seq: int
    data_size: int
    #: Names of the secrets the run used before it was suspended (to be masked again).
    secrets_used: tuple[str, ...] = ()


def _count(value: Any) -> int:
    if type(value) is not int:
        raise FlowStateError("the state's step counters are not numbers")
    if not 0 <= value <= MAX_COUNT:
        raise FlowStateError("the state's step counters are out of range")
    return value


#: How far in the future a state's ``suspended_at`` may be (clocks of two machines differ).
CLOCK_SKEW = 300


def _version(
    flow: CompiledFlow, name: Any, fingerprint: Any, versions: FlowVersions | None
) -> CompiledFlow:
    """The version of ``flow`` a state names: ``flow`` itself, or the kept version whose
    fingerprint the state carries (FlowStateError when there is none)."""
    if type(name) is not str or name != flow.name:
        shown = name[:80] if type(name) is str else None
        raise FlowStateError(
            f"the state belongs to flow {shown!r}; the flow given is not that one "
            f"({flow.name[:80]!r})"
        )
    if fingerprint == flow.fingerprint:
        return flow
    shown_version = fingerprint[:16] if type(fingerprint) is str else "?"
    if versions is None:
        raise FlowStateError(
            f"the state belongs to version {shown_version!r} of flow {name[:80]!r}, as it was "
            "when the run was suspended; the flow given is not that one (to resume calls on "
            "the version they started on, give the runtime a FlowVersions)"
        )
    kept = versions.get(fingerprint) if type(fingerprint) is str else None
    if kept is None or kept.name != name:
        raise FlowStateError(
            f"the state belongs to version {shown_version!r} of flow {name[:80]!r}, which is no "
            f"longer kept (FlowVersions keeps the {versions.capacity} most recently used "
            "versions of each flow): this call cannot resume; add that version with "
            "FlowVersions.add, or keep more of them (FlowVersions(capacity=...))"
        )
    return kept


def _read(
    given: Any,
    flow: CompiledFlow,
    keys: StateKeys | None,
    limits: tuple[int, int, int],
    max_age: float,
    versions: FlowVersions | None,
    measure_data: Callable[[Any, int, int, bool], int],
) -> Resumable:
    if type(given) is dict:
        state: dict[Any, Any] = given
    elif isinstance(given, Mapping):
        state = dict(given.items())  # one read of a foreign mapping
    else:
        raise FlowStateError("this is not a flowlang run state")
    form = state.get("format")
    if type(form) is not str or form != STATE_FORMAT:
        if type(form) is str and form.startswith("flowlang.run/"):
            raise FlowStateError(
                f"this run state has format {form[:40]!r}; this runtime reads {STATE_FORMAT!r}"
            )
        raise FlowStateError("this is not a flowlang run state")
    if keys is not None:
        keys.verify(state)
    flow = _version(flow, state.get("flow"), state.get("fingerprint"), versions)
    step_id = state.get("waiting_at")
    if (
        type(step_id) is not str
        or step_id not in flow.steps
        or not flow.steps[step_id].kind.takes_input
    ):
        shown_step = step_id[:80] if type(step_id) is str else type(step_id).__name__
        raise FlowStateError(
            f"the state is not waiting at a step that takes input ({shown_step!r})"
        )
    run_id, seq = state.get("run_id"), state.get("seq")
    if type(run_id) is not str or _RUN_ID.fullmatch(run_id) is None:
        raise FlowStateError("the state has no run id (1 to 100 of A-Z a-z 0-9 _ - .)")
    if type(seq) is not int or not 1 <= seq <= MAX_COUNT:
        raise FlowStateError("the state's suspension number (seq) is not a positive integer")
    suspended_at = state.get("suspended_at")
    if type(suspended_at) is not int:
        raise FlowStateError("the state has no suspension time (suspended_at)")
    age = time.time() - suspended_at
    if age > max_age:
        raise FlowStateError(
            f"the state expired: it was suspended {age:.0f}s ago "
            f"(RuntimeSettings.max_state_age is {max_age:g}s)"
        )
    if age < -CLOCK_SKEW:
        raise FlowStateError("the state's suspension time is in the future")
    streak: Any = state.get("streak")
    if type(streak) not in (list, tuple) or len(streak) != 2:
        raise FlowStateError("the state's step counters are not numbers")
    steps_run, count = _count(state.get("steps_run")), _count(streak[1])
    last = streak[0]
    if last is not None and type(last) is not str:
        raise FlowStateError("the state's step counters are out of range")
    scope = state.get("scope")
    if type(scope) is not dict:
        raise FlowStateError("the state has no scope")
    if "secrets" in scope:
        raise FlowStateError("the state's scope carries secrets (a state never does)")
    for root in STATE_ROOTS:
        if type(scope.get(root, {})) is not dict:
            raise FlowStateError(f"the state's {root} is not a mapping")
    _, max_state, max_depth = limits
    size = measure_data(scope, max_depth + 1, max_state, True)
    if size < 0:
        problem = data_problem(
            scope,
            max_depth + 1,
            max_state,
            True,
            root="scope",
            depth_limit=max_depth,
            setting="max_state_size",
        )
        raise FlowStateError(f"the state cannot be resumed: {problem}")
    secrets_used = _secret_names(state.get("secrets_used", []))
    return Resumable(
        flow,
        flow.steps[step_id],
        scope,
        (steps_run, (last, count)),
        run_id,
        seq,
        size,
        secrets_used,
    )


def _secret_names(value: Any) -> tuple[str, ...]:
    """The ``secrets_used`` of a state: a list of at most MAX_SECRETS_USED distinct names."""
    if type(value) is not list or len(value) > MAX_SECRETS_USED:
        raise FlowStateError(
            f"the state's secrets_used is not a list of at most {MAX_SECRETS_USED} secret names"
        )
    if not all(is_secret_name(name) for name in value) or len(set(value)) != len(value):
        raise FlowStateError("the state's secrets_used holds something that is not a secret name")
    return tuple(value)


def read_state(
    state: Any,
    flow: CompiledFlow,
    keys: StateKeys | None,
    limits: tuple[int, int, int],
    max_age: float = math.inf,
    versions: FlowVersions | None = None,
    measure_data: Callable[[Any, int, int, bool], int] = measure,
) -> Resumable:
    """Check a state against ``flow`` (and its signature when there are ``keys``), its age
    (at most ``max_age`` seconds) and its data (``limits``: value size, state size, depth;
    ``measure_data``: flowlang.rundata.measure or its compiled twin, a runtime's
    ``twins.measure_data``).

    A state of another version of ``flow`` (its fingerprint differs) resumes on that version
    when ``versions`` keeps it; the version is chosen after the signature is checked.

    Every problem is a FlowStateError, whatever the state holds: a hostile mapping or value
    that raises anything else while being read is reported as one too.
    """
    try:
        return _read(state, flow, keys, limits, max_age, versions, measure_data)
    except FlowStateError:
        raise
    except Exception as error:  # the one place a bad state becomes an error
        raise FlowStateError(f"the state cannot be read ({type(error).__name__})") from None
