"""Fixtures: every evaluation test runs on both backends through `backend` and `make_engine`."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Real services for the tests that ask for them by name (tests/services.py): one per session.
# A random key prefix on that Redis for the distributed automations' tests, removed afterwards.
from distributed_support import kit  # noqa: F401
from services import redis_server  # noqa: F401

import flowlang
from flowlang.expr.backends import AVAILABLE

BACKENDS = ("cython", "python")

# A suite started as a background job of a non-interactive shell inherits SIGINT ignored, and so
# would every command it starts: the Ctrl-C tests would wait for an interrupt that never lands.
# A handler of our own is reset to the default in each child, which then sees Ctrl-C as a user's
# terminal would deliver it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# `--hypothesis-profile thorough` runs twenty times more examples (used to check the properties
# after a change to the evaluators); the default keeps the suite fast.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=2000)
settings.load_profile("default")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of a backend; the Cython one is skipped only where it is not available."""
    if request.param not in AVAILABLE:
        pytest.skip("the cython backend is not available in this process")
    return str(request.param)


@pytest.fixture
def make_engine(backend: str) -> Callable[..., flowlang.Engine]:
    """Build an Engine on the current backend with the given options."""

    def make(**options: Any) -> flowlang.Engine:
        return flowlang.Engine(backend=backend, **options)

    return make


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """SECURITY.md: fail any test whose logs contain a secret value a run has used."""
    caplog.set_level(logging.DEBUG)
    yield
    from flowlang.runtime.secrets import holds_secret

    # Every form a secret can take (percent-encoded, JSON-escaped, base64...), not only as is.
    assert not holds_secret(caplog.text), "a secret value a run used appears in the logs"


@pytest.fixture(scope="module")
def ca() -> Any:
    """A certificate authority made at test time (trustme), trusted by the test clients."""
    import trustme

    return trustme.CA()


@pytest.fixture
def server(ca: Any) -> Iterator[Any]:
    """A loopback HTTPS server (tests/servers.py), stopped after the test."""
    from servers import serve

    with serve(ca) as running:
        yield running
