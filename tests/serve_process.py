"""`flowlang serve` as a real process for tests: started in its own process group on a free
loopback port, read until it says where it listens (bounded), stopped by group."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from tests.serve_support import FLOWS, PUBLIC_URL, SECRETS, WORKFLOWS
from tests.services import free_port, kill_group

#: Seconds a server has to say it listens.
START_TIMEOUT = 30.0


def secret_environment(secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a serve process: the test secrets as FLOWLANG_SECRET_* variables."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("FLOWLANG_SECRET_")
    }
    for name, value in (secrets or SECRETS).items():
        env[f"FLOWLANG_SECRET_{name.upper()}"] = value
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def serve_arguments(tmp: Path, *extra: str, files: Sequence[str] = ()) -> list[str]:
    """The example flows and workflows served offline (recorded responses), signed webhooks,
    events by bearer token; events in memory unless ``extra`` gives ``--events-store``."""
    responses = tmp / "responses.yaml"
    if not responses.exists():
        parts = [path.read_text() for path in sorted((FLOWS / "data").glob("*.responses.yaml"))]
        parts.append((WORKFLOWS / "data" / "responses.yaml").read_text())
        responses.write_text("\n".join(parts))
    context = tmp / "context.json"
    context.write_text('{"call": {"office": "brno"}}')
    return [
        *(files or (str(FLOWS), str(WORKFLOWS))),
        "--public-url", PUBLIC_URL,
        "--twilio-key", "twilio_token",
        "--event-token", "event_token",
        "--event-secret", "event_secret",
        "--fallback", "queue:operator",
        "--responses", str(responses),
        "--context", str(context),
        "--host", "127.0.0.1",
        *(() if "--events-store" in extra else ("--no-events-store",)),
        *extra,
    ]  # fmt: skip


class ServeProcess:
    """One `flowlang serve` process; ``url`` is where it listens once :meth:`start` returns."""

    def __init__(self, arguments: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.arguments = [*arguments, "--port", str(self.port)]
        self.env = env or secret_environment()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self) -> ServeProcess:
        """Start the server and wait (bounded) until it says it listens."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowlang", "serve", *self.arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            if "listening on" in line:
                return self
        self.kill()
        raise AssertionError(f"flowlang serve did not start:\n{self.output()}")

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def output(self) -> str:
        """Everything the server wrote on standard error so far."""
        return "\n".join(self.lines)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (bounded) for the exit status."""
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"flowlang serve did not stop on SIGTERM:\n{self.output()}"
            ) from None
        self._close()
        return status

    def kill(self) -> None:
        """SIGKILL the server's group (a crash) and reap it."""
        if self.process is not None:
            kill_group(self.process)
            self._close()

    def _close(self) -> None:
        """Read what is left of standard error (bounded), then close the pipe."""
        assert self.process is not None
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
