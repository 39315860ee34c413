"""Secrets: values that flows name as ``<<secrets.NAME>>``, fetched late and redacted everywhere."""

from __future__ import annotations

__all__ = [
    "EnvironmentSecrets",
    "MappingSecrets",
    "Redactor",
    "SecretsProvider",
    "SecretsView",
    "install_log_redaction",
]

import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

REDACTED = "[redacted]"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


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
        if not _NAME.match(name):
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


#: Every secret value any run in this process has used (most recent last, at most
#: _REGISTRY_SIZE), so that libraries' own logs can be masked too.
_REGISTRY: dict[str, None] = {}
_REGISTRY_SIZE = 10_000
_REGISTRY_LOCK = threading.Lock()


def _register(value: str) -> None:
    with _REGISTRY_LOCK:
        _REGISTRY.pop(value, None)
        _REGISTRY[value] = None
        if len(_REGISTRY) > _REGISTRY_SIZE:
            del _REGISTRY[next(iter(_REGISTRY))]


class _LibraryLogRedaction(logging.Filter):
    """Masks secret values in records of libraries that log URLs (httpx logs every request line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _REGISTRY:
            message = record.getMessage()
            with _REGISTRY_LOCK:
                values = sorted(
                    (value for value in _REGISTRY if value in message), key=len, reverse=True
                )
            if values:
                for value in values:
                    message = message.replace(value, REDACTED)
                record.msg, record.args = message, None
        return True


_LOG_FILTER = _LibraryLogRedaction()


def install_log_redaction(names: tuple[str, ...] = ("httpx", "httpcore")) -> None:
    """Put the secret-masking filter on the loggers of the HTTP libraries (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


class Redactor:
    """Remembers every secret value used in a run and masks it in any text or data."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        #: The secret values used so far.
        self.used: set[str] = set()

    def add(self, value: str) -> None:
        if value:
            self.used.add(value)
            _register(value)

    def text(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``[redacted]``."""
        if not self.used:
            return text
        for value in sorted(self.used, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def data(self, value: Any) -> Any:
        """A copy of JSON-shaped ``value`` with secrets masked in every string (keys included)."""
        if not self.used:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(key)): self.data(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(item) for item in value]
        return value


class SecretsView(Redactor, Mapping[str, str]):
    """The ``secrets`` root of a scope: looks each name up on use, and is the redactor that
    masks every value so used (one per run or event)."""

    __slots__ = ("_provider", "missing")

    def __init__(self, provider: SecretsProvider) -> None:
        self.used: set[str] = set()  # Redactor's one field, set here: one per run, kept cheap
        self._provider = provider
        #: Names looked up but not found since the last call to ``take_missing``.
        self.missing: list[str] = []

    def __getitem__(self, name: str) -> str:
        value = self._provider.get(name) if isinstance(name, str) else None
        if value is None:
            raise KeyError(name)
        self.add(value)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if self._provider.get(name) is None:
            self.missing.append(name)
            return False
        return True

    def take_missing(self) -> str | None:
        """A message naming the secrets that were missing since the last call, or None."""
        names, self.missing = list(dict.fromkeys(self.missing)), []
        if not names:
            return None
        where = "; ".join(f"{name!r} ({self._provider.describe(name)})" for name in names)
        return f"secret {where} is not set"

    def __iter__(self) -> Iterator[str]:
        return iter(())  # secrets are never listed

    def __len__(self) -> int:
        return 0
