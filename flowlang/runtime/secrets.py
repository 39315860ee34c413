"""Secrets: values that flows name as ``<<secrets.NAME>>``, fetched late and redacted everywhere.

Redaction works on text, in every form the runtime or the libraries it drives write a value:
as is or as the ``trim``, ``lower`` and ``upper`` filters make it; percent-encoded (as
endpoints, ``urlencode`` and redirects carry it); JSON-escaped; as a Python ``repr`` of text or
bytes (exception messages, httpcore's logs); and inside base64 (HTTP Basic credentials).
Masking text rather than the holes of templates also covers a secret that a server echoes
back. Policy (see :data:`MIN_SUBSTRING`): a secret of fewer than four characters once trimmed
is masked only where a whole string equals one of its forms; longer ones wherever they occur.
:meth:`Redactor.data` masks string values and string keys by the same rule (a server may echo a
secret as a header name or a JSON key); numbers, booleans, the number of entries of every map
and list never change: masked keys that meet another key take a suffix (``[redacted] 2``).
"""

from __future__ import annotations

__all__ = [
    "MAX_SECRETS_USED",
    "MAX_SECRET_NAME",
    "MIN_SUBSTRING",
    "REDACTED",
    "EnvironmentSecrets",
    "MappingSecrets",
    "Redactor",
    "SecretLogFilter",
    "SecretUse",
    "SecretsProvider",
    "SecretsView",
    "holds_secret",
    "install_log_redaction",
    "is_secret_name",
    "secret_forms",
]

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, quote_plus

from flowlang.errors import RequestError

#: What a preparation builds with one use of the secrets (a request).
_Built = TypeVar("_Built")

REDACTED = "[redacted]"
#: Secrets shorter than this (once trimmed) are masked only where a whole string equals one
#: of their forms: masking ``"ab"`` inside every text would destroy traces and say which
#: letters it holds.
MIN_SUBSTRING = 4
#: Base64 stretches shorter than this are not masked inside text (too likely by chance).
MIN_BASE64 = 8
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: How many secret names a run's state carries (``secrets_used``), and how long each may be.
MAX_SECRETS_USED = 64
MAX_SECRET_NAME = 100


def is_secret_name(name: object) -> bool:
    """Whether ``name`` is a secret name a state may carry (``A-Z a-z 0-9 _ -``, not starting
    with a digit or ``-``, at most MAX_SECRET_NAME characters)."""
    return (
        type(name) is str
        and 0 < len(name) <= MAX_SECRET_NAME
        and name.isascii()
        and _NAME.fullmatch(name) is not None
    )


#: A percent-escape with a lower-case hex digit (``%2b``): texts and forms are compared with
#: every escape upper-cased, which keeps their length, so that ``%2b``, ``%2B`` and ``%2F``
#: mixed in any way are one form.
_LOWER_ESCAPE = re.compile(r"%(?:[a-f][0-9A-Fa-f]|[0-9A-F][a-f])")


def _upper_escape(match: re.Match[str]) -> str:
    return match.group().upper()


def _normal(text: str) -> str:
    """``text`` with its percent-escapes upper-cased (same length, same positions)."""
    if "%" not in text:
        return text
    return _LOWER_ESCAPE.sub(_upper_escape, text)


class SecretsProvider(Protocol):
    """Where secret values come from."""

    def get(self, name: str) -> str | None:
        """The value of secret ``name``, or None when there is none."""

    def describe(self, name: str) -> str:
        """Where secret ``name`` is looked for, for error messages (never its value)."""


class EnvironmentSecrets:
    """Secrets from the environment: ``secrets.crm_token`` is ``FLOWLANG_SECRET_CRM_TOKEN``."""

    def __init__(
        self, prefix: str = "FLOWLANG_SECRET_", environ: Mapping[str, str] | None = None
    ) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ

    def get(self, name: str) -> str | None:
        if not _NAME.fullmatch(name):
            return None
        return self.environ.get(self.variable(name))

    def variable(self, name: str) -> str:
        """The environment variable that holds secret ``name``."""
        return self.prefix + name.upper().replace("-", "_")

    def describe(self, name: str) -> str:
        return f"environment variable {self.variable(name)}"


class MappingSecrets:
    """Secrets from a mapping (for tests and for applications with their own vault client)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def describe(self, name: str) -> str:
        return "the secrets mapping"


# --- the forms of a value ---------------------------------------------------------------------


_URLSAFE = str.maketrans("+/", "-_")


def _base64_cores(data: bytes) -> list[str]:
    """For each of the three alignments in a base64 stream (``user:secret`` in Basic
    credentials puts the secret at any), the characters that depend on ``data`` alone; in
    the standard and the URL-safe alphabet."""
    cores = []
    for shift in range(3):
        padded = b"\0" * shift + data
        encoded = base64.b64encode(padded + b"\0" * (-len(padded) % 3)).decode()
        first = -(-8 * shift // 6)  # the first character whose six bits all come from data
        core = encoded[first : 8 * len(padded) // 6]
        if len(core) >= MIN_BASE64:
            cores += [core, core.translate(_URLSAFE)]
    return cores


def _repr_bodies(text: str) -> list[str]:
    """``repr`` of ``text`` (and of its UTF-8 bytes) without the quotes, in both quoting
    styles Python may choose."""
    encoded = text.encode("utf-8", "surrogatepass")
    return [
        repr(text)[1:-1],
        repr('"' + text)[2:-1],
        repr(encoded)[2:-1],
        repr(b'"' + encoded)[3:-1],
    ]


def _json_bodies(text: str) -> list[str]:
    """JSON string escapes of ``text`` without the quotes: ASCII or not, ``/`` escaped or not."""
    ascii_only = json.dumps(text)[1:-1]
    return [ascii_only, json.dumps(text, ensure_ascii=False)[1:-1], ascii_only.replace("/", "\\/")]


#: How URLs (percent-encoding) and exception messages (repr) write a text.
_WRITERS: tuple[Callable[[str], list[str]], ...] = (
    lambda text: [quote(text, safe=""), quote(text), quote_plus(text)],
    _repr_bodies,
)


def _guarded(make: Callable[[str], list[str]], text: str) -> list[str]:
    try:
        return make(text)
    except (UnicodeError, ValueError):  # a lone surrogate: the runtime cannot write it either
        return []


def _variants(value: str) -> set[str]:
    """``value`` and what the ``trim``, ``lower`` and ``upper`` filters make of it."""
    stripped = value.strip()
    variants = {value, stripped, value.lower(), value.upper(), stripped.lower(), stripped.upper()}
    variants.discard("")
    return variants


def _percent_twice(text: str) -> list[str]:
    """``urlencode`` in an endpoint hole, which percent-encodes again."""
    return [quote(quote(text, safe=""), safe="")]


@lru_cache(maxsize=4096)
def secret_forms(value: str) -> tuple[str, ...]:
    """Every form of secret ``value`` to mask, longest first (each form once).

    The value and what the text filters make of it; their JSON escapes; each of these as is,
    percent-encoded (once or twice) or repr'd; and base64 stretches. (Percent-escapes with
    lower-case hex, as a server may echo them, are matched by comparing upper-cased.)
    """
    variants = _variants(value)
    texts = set(variants)
    for variant in variants:
        texts.update(_guarded(_json_bodies, variant))
    forms = set(texts)
    for text in texts:
        for write in _WRITERS:
            forms.update(_guarded(write, text))
    for variant in variants:
        forms.update(_guarded(_percent_twice, variant))
    for variant in {value, value.strip()}:  # Basic credentials: as given, or trimmed
        forms.update(_guarded(lambda text: _base64_cores(text.encode()), variant))
    forms.discard("")
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


_ALNUM_RUN = re.compile(f"[A-Za-z0-9]{{{MIN_SUBSTRING},}}")


@lru_cache(maxsize=4096)
def _substring_groups(value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The forms of a secret that is not short to look for inside text, grouped by an anchor
    each contains: a text without the anchor holds none of its forms, so a few anchors are
    looked for instead of every form. Anchors: the longest ASCII letter-and-digit run of each
    variant (which percent-encoding, JSON and repr leave alone); a form without one is its own.
    Forms that hold another form are left out (finding the shorter one is enough)."""
    forms = list(dict.fromkeys(_normal(form) for form in secret_forms(value)))
    forms = [form for form in forms if len(form) >= MIN_SUBSTRING]
    forms = [
        form
        for index, form in enumerate(forms)
        if not any(other in form for other in forms[index + 1 :] if len(other) < len(form))
    ]
    anchors = sorted(
        {
            max(runs, key=len)
            for runs in (_ALNUM_RUN.findall(_normal(variant)) for variant in _variants(value))
            if runs
        },
        key=lambda anchor: (-len(anchor), anchor),
    )
    groups: dict[str, list[str]] = {}
    for form in forms:
        anchor = next((anchor for anchor in anchors if anchor in form), form)
        groups.setdefault(anchor, []).append(form)
    return tuple((anchor, tuple(members)) for anchor, members in groups.items())


def is_short(value: str) -> bool:
    """Whether ``value`` (or what ``trim`` makes of it) is too short to mask inside text."""
    return len(value.strip()) < MIN_SUBSTRING


class _Masks:
    """The compiled forms of a set of secret values: what to find and how to replace it."""

    __slots__ = ("groups", "index", "whole")

    #: With more anchors than this, a text is scanned once through an index of the forms'
    #: starts (a process's registry of many secrets) instead of looking for each anchor.
    INDEXED = 100

    def __init__(self, values: Any) -> None:
        whole: set[str] = set()
        groups: dict[str, set[str]] = {}
        for value in values:
            if is_short(value):
                whole.update(map(_normal, secret_forms(value)))
                continue
            for anchor, forms in _substring_groups(value):
                groups.setdefault(anchor, set()).update(forms)
        self.whole = frozenset(whole)
        self.groups = tuple((anchor, tuple(forms)) for anchor, forms in groups.items())
        self.index: dict[str, tuple[str, ...]] | None = None
        if len(self.groups) > self.INDEXED:
            index: dict[str, set[str]] = {}
            for _, forms in self.groups:
                for form in forms:
                    index.setdefault(form[:MIN_SUBSTRING], set()).add(form)
            self.index = {start: tuple(forms) for start, forms in index.items()}

    def found(self, text: str) -> list[str] | None:
        """The forms in ``text`` (compared with its escapes upper-cased), longest first; []
        when the whole text is a form; None when it holds none."""
        probe = _normal(text)
        if probe in self.whole:
            return []
        return self._hits(probe)

    def _hits(self, probe: str) -> list[str] | None:
        index = self.index
        if index is None:
            hits = [
                form
                for anchor, forms in self.groups
                if anchor in probe
                for form in forms
                if form in probe
            ]
        else:
            hits = []
            get = index.get
            for start in range(len(probe) - MIN_SUBSTRING + 1):
                candidates = get(probe[start : start + MIN_SUBSTRING])
                if candidates is not None:
                    hits.extend(form for form in candidates if probe.startswith(form, start))
        if not hits:
            return None
        return sorted(set(hits), key=lambda form: (-len(form), form))

    def mask(self, text: str) -> str:
        """``text`` with every stretch that is a form replaced by ``[redacted]`` (overlapping
        or adjacent stretches as one)."""
        probe = _normal(text)
        if probe in self.whole:
            return REDACTED
        hits = self._hits(probe)
        if hits is None:
            return text
        spans = []
        for form in hits:
            start = probe.find(form)
            while start != -1:
                spans.append((start, start + len(form)))
                start = probe.find(form, start + 1)
        spans.sort()
        pieces = []
        kept = 0  # text before this position is written out
        begin, end = spans[0]
        for start, stop in spans[1:]:
            if start <= end:
                end = max(end, stop)
                continue
            pieces += [text[kept:begin], REDACTED]
            kept, (begin, end) = end, (start, stop)
        pieces += [text[kept:begin], REDACTED, text[end:]]
        return "".join(pieces)


# --- the process-wide registry and library logs -----------------------------------------------

#: Every secret value any run in this process has used (most recent last, at most
#: _REGISTRY_SIZE), so that libraries' own logs can be masked too.
_REGISTRY: dict[str, None] = {}
_REGISTRY_SIZE = 10_000
_REGISTRY_LOCK = threading.Lock()
_registry_masks: _Masks | None = None


def _register(value: str) -> None:
    global _registry_masks
    with _REGISTRY_LOCK:
        if value in _REGISTRY:
            return
        _REGISTRY[value] = None
        if len(_REGISTRY) > _REGISTRY_SIZE:
            del _REGISTRY[next(iter(_REGISTRY))]
        _registry_masks = None


def _process_masks() -> _Masks:
    global _registry_masks
    masks = _registry_masks
    if masks is None:
        with _REGISTRY_LOCK:
            masks = _registry_masks = _Masks(list(_REGISTRY))
    return masks


def holds_secret(text: str) -> bool:
    """Whether ``text`` holds, in any form :func:`secret_forms` lists, a secret value some run
    in this process has used."""
    return _process_masks().found(text) is not None


def _mask_record(record: logging.LogRecord) -> None:
    """Mask every registered secret in ``record``'s message, arguments and exception text."""
    masks = _process_masks()
    try:
        message = record.getMessage()
    except Exception:  # a record that cannot be formatted: the handler will report it
        message = str(record.msg)
    masked = masks.mask(message)
    if masked is not message:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        masked = masks.mask(text)
        if masked is not text:  # formatters use exc_text as it is
            record.exc_text = masked
    if record.stack_info:
        record.stack_info = masks.mask(record.stack_info)


class SecretLogFilter(logging.Filter):
    """A log filter that masks every secret value a run in this process has used.

    ``install_log_redaction`` covers the HTTP libraries' loggers; put this filter on your own
    handlers to cover the application's loggers as well.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _REGISTRY:
            _mask_record(record)
        return True


_LOG_FILTER = SecretLogFilter()
#: Logger names (with their children) whose records are masked as they are made: the HTTP
#: stack flowlang drives, flowlang itself, and asyncio (it logs exceptions of tasks that
#: nobody awaited, with their messages).
LOG_NAMESPACES = ("httpx", "httpcore", "h11", "h2", "hpack", "flowlang", "asyncio")
_INSTALL_LOCK = threading.Lock()
_installed: tuple[str, ...] | None = None
#: The logger names masked by the record factory, and the prefixes of their children.
_masked_names: frozenset[str] = frozenset()
_masked_children: tuple[str, ...] = ()


def _mask_names(names: tuple[str, ...]) -> None:
    global _installed, _masked_names, _masked_children
    _installed = names
    _masked_names = frozenset(names)
    _masked_children = tuple(name + "." for name in names)


def install_log_redaction(names: tuple[str, ...] = LOG_NAMESPACES) -> None:
    """Mask secrets in every log record of the loggers ``names`` and of all their children.

    A filter on a logger does not see the records of its children (``httpcore.http11``), and
    flowlang does not own the handlers; so the masking is done where records are made: the
    process's log record factory is wrapped once (chained to the factory in place, so other
    wrappers keep working). Idempotent: later calls add names, never a second wrapper. A filter
    also stays on each named logger, in case an application replaces the factory unchained.
    """
    with _INSTALL_LOCK:
        for name in names:
            logger = logging.getLogger(name)
            if _LOG_FILTER not in logger.filters:
                logger.addFilter(_LOG_FILTER)
        first = _installed is None
        _mask_names(tuple(dict.fromkeys((*(_installed or ()), *names))))
        if not first:
            return
        previous = logging.getLogRecordFactory()

        def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _REGISTRY:
                name = record.name
                if name in _masked_names or name.startswith(_masked_children):
                    _mask_record(record)
            return record

        logging.setLogRecordFactory(make_record)


# --- the redactor of one run ------------------------------------------------------------------


class Redactor:
    """Remembers every secret value used in a run and masks it in any text or data."""

    __slots__ = ("_masks", "used")

    def __init__(self) -> None:
        #: The secret values used so far (the step loops test it for the fast path: empty,
        #: nothing to mask). The same set for the redactor's whole life.
        self.used: set[str] = set()
        self._masks: _Masks | None = None

    def add(self, value: str) -> None:
        if isinstance(value, str) and value and value not in self.used:
            self.used.add(value)
            self._masks = None
            _register(value)

    def _compiled(self) -> _Masks:
        masks = self._masks
        if masks is None:
            masks = self._masks = _Masks(self.used)
        return masks

    def text(self, text: str) -> str:
        """``text`` with every form of every known secret value replaced by ``[redacted]``."""
        if not self.used:
            return text
        return self._compiled().mask(text)

    def data(self, value: Any) -> Any:
        """JSON-shaped ``value`` with secrets masked inside its string values and string keys.

        Numbers, booleans, types and the number of entries of every map and list never change;
        a key changes only where it held a secret (see :func:`_masked_keys`). ``value`` itself
        comes back when it holds no secret; else a copy (maps as dicts, sequences as lists).
        Iterative: any depth; a container met twice (shared or cyclic) is copied once.
        """
        if not self.used:
            return value
        masks = self._compiled()
        if isinstance(value, str):
            return masks.mask(value)
        if not _holds_secret(value, masks):
            return value
        return _masked_copy(value, masks)


def _holds_secret(value: Any, masks: _Masks) -> bool:
    """Whether any string value or string key inside ``value`` holds a secret (iterative, each
    container once)."""
    pending = [value]
    seen: set[int] = set()
    found = masks.found
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if found(item) is not None:
                return True
            continue
        if isinstance(item, Mapping):
            if id(item) in seen:
                continue
            seen.add(id(item))
            for key in item:
                if isinstance(key, str) and found(key) is not None:
                    return True
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)) and id(item) not in seen:
            seen.add(id(item))
            pending.extend(item)
    return False


def _masked_keys(keys: list[Any], masks: _Masks) -> list[Any]:
    """The keys of one map with secrets masked in its string keys (by the rule of values).

    A key that held no secret keeps its name. A masked key that meets another key of the map
    takes the first free name of ``"<masked> 2"``, ``"<masked> 3"``... in the map's order, so
    the map keeps every entry and the names are the same each time.
    """
    renamed: dict[int, str] = {}
    for index, key in enumerate(keys):
        if isinstance(key, str):
            masked = masks.mask(key)
            if masked != key:
                renamed[index] = masked
    if not renamed:
        return keys
    taken = {key for index, key in enumerate(keys) if index not in renamed}
    last: dict[str, int] = {}  # the last suffix given to each masked name
    names = list(keys)
    for index, base in renamed.items():
        name, number = base, last.get(base, 1)
        while name in taken:
            number += 1
            name = f"{base} {number}"
        last[base] = number
        taken.add(name)
        names[index] = name
    return names


def _masked_copy(value: Any, masks: _Masks) -> Any:
    """A copy of ``value`` with its string values and keys masked (iterative; shared
    containers and cycles copied once, as they were)."""
    copies: dict[int, Any] = {}

    def copy_of(item: Any) -> tuple[Any, bool]:
        """(the copy or the final value, whether it is a new container to fill)."""
        if isinstance(item, str):
            return masks.mask(item), False
        if isinstance(item, (Mapping, list, tuple)):
            known = copies.get(id(item))
            if known is not None:
                return known, False
            made: Any = {} if isinstance(item, Mapping) else []
            copies[id(item)] = made
            return made, True
        return item, False

    root, fill = copy_of(value)
    pending = [(value, root)] if fill else []
    while pending:
        original, made = pending.pop()
        if isinstance(made, dict):
            entries = list(original.items())
            names = _masked_keys([key for key, _ in entries], masks)
            for name, (_, item) in zip(names, entries, strict=True):
                made[name], fill = copy_of(item)
                if fill:
                    pending.append((item, made[name]))
        else:
            for item in original:
                copied, fill = copy_of(item)
                made.append(copied)
                if fill:
                    pending.append((item, copied))
    return root


class SecretsView(Redactor, Mapping[str, str]):
    """The ``secrets`` root of a scope: looks each name up on use, and is the redactor that
    masks every value so used (one per run or event). A request is prepared with a
    :class:`SecretUse` of it (:meth:`use`): one provider lookup per name and use,
    the missing names returned by the preparation."""

    __slots__ = ("_provider", "names")

    def __init__(self, provider: SecretsProvider) -> None:
        self.used: set[str] = set()  # Redactor's fields, set here: one per run, kept cheap
        self._masks = None
        self._provider = provider
        #: Names of the secrets used (a state carries them, so that a resumed run masks what
        #: was sent before the suspension): at most MAX_SECRETS_USED, each a valid name.
        self.names: set[str] = set()

    def lookup(self, name: object) -> str | None:
        """The value of secret ``name`` (one provider lookup; masked from now on), or None."""
        if not isinstance(name, str):
            return None
        value = self._provider.get(name)
        if value is None:
            return None
        self.add(value)
        names = self.names
        if name not in names and len(names) < MAX_SECRETS_USED and is_secret_name(name):
            names.add(name)
        return value

    def describe(self, name: str) -> str:
        """Where secret ``name`` is looked for (the provider's words)."""
        return self._provider.describe(name)

    def __getitem__(self, name: str) -> str:
        value = self.lookup(name)
        if value is None:
            raise KeyError(name)
        return value

    def use(self, scope: Mapping[str, Any]) -> tuple[dict[str, Any], SecretUse]:
        """A copy of ``scope`` (its roots, not their data) whose ``secrets`` is a fresh
        :class:`SecretUse` of this view, and that use: render one request with the copy, then
        ask the use what was missing."""
        use = SecretUse(self)
        return {**scope, "secrets": use}, use

    def prepare(
        self,
        scope: Mapping[str, Any],
        build: Callable[[Mapping[str, Any]], _Built],
        failures: tuple[type[Exception], ...],
    ) -> _Built:
        """``build(scope)`` with one :meth:`use` of the secrets (each looked up once), the
        missing ones returned as a RequestError that names them: also when what a missing
        secret broke raised one of ``failures`` first."""
        scope, use = self.use(scope)
        try:
            built = build(scope)
        except failures:
            if use.missing:  # what a missing secret broke: name the secret
                raise RequestError(use.problem()) from None
            raise
        problem = use.problem()
        if problem is not None:
            raise RequestError(problem)
        return built

    def recall(self, names: Iterable[str]) -> None:
        """Use the secrets ``names`` (of an earlier part of the run) again, so that their
        values are masked; a name the provider no longer has is skipped."""
        for name in names:
            self.lookup(name)

    def __contains__(self, name: object) -> bool:
        return self.lookup(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(())  # secrets are never listed

    def __len__(self) -> int:
        return 0


class SecretUse(Mapping[str, str]):
    """The ``secrets`` of one use (one request being prepared): each name is looked up once
    through its :class:`SecretsView` however often the templates read it (the evaluator asks
    ``in`` then ``[]``), and the names that were missing are kept for the preparation to
    return (:attr:`missing`, :meth:`problem`)."""

    __slots__ = ("_found", "_view", "missing")

    def __init__(self, view: SecretsView) -> None:
        self._view = view
        self._found: dict[str, str | None] = {}
        #: Names read but not found, in first-use order.
        self.missing: list[str] = []

    def _fetch(self, name: object) -> str | None:
        if not isinstance(name, str):
            return None
        found = self._found
        if name in found:
            return found[name]
        value = found[name] = self._view.lookup(name)
        if value is None:
            self.missing.append(name)
        return value

    def __getitem__(self, name: str) -> str:
        value = self._fetch(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return self._fetch(name) is not None

    def problem(self) -> str | None:
        """A message naming the missing secrets and where each was looked for, or None."""
        if not self.missing:
            return None
        where = "; ".join(f"{name!r} ({self._view.describe(name)})" for name in self.missing)
        return f"secret {where} is not set"

    def __iter__(self) -> Iterator[str]:
        return iter(())  # secrets are never listed

    def __len__(self) -> int:
        return 0
