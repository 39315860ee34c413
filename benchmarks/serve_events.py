"""``POST /events`` accepted per second by ``flowlang serve``, with its events store and without.

Starts ``flowlang serve`` (offline, a workflow no event matches, so each event is recorded,
dispatched to nothing and finished: two synced commits) in four ways: one process with
``--no-events-store``, one with ``--events-store FILE``, and ``--workers 2`` (a ``redis-server``
started here on a free port for the calls) with each; then posts N events (default 1,000; 100
more to warm up), 32 at once over kept-alive connections, and prints events per second. Run:
``python benchmarks/serve_events.py [N]`` (needs ``redis-server`` for the workers' lines;
``ONLY_WORKERS=1``: those alone).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.serve_process import ServeProcess, secret_environment
from tests.serve_support import EVENT_TOKEN, PUBLIC_URL
from tests.services import RedisServer

#: Requests in flight at once.
AT_ONCE = 32
WORKFLOW = """\
workflow: nothing
trigger: never.sent
actions:
  - {name: a, type: api_request, endpoint: https://crm.example.com/x, method: POST}
"""


async def _load(url: str, count: int) -> float:
    """Post ``count`` events (after 100 to warm up); events per second."""
    turns = asyncio.Semaphore(AT_ONCE)
    auth = {"Authorization": f"Bearer {EVENT_TOKEN}"}
    limits = httpx.Limits(max_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60, limits=limits) as c:

        async def one(name: str) -> None:
            async with turns:
                answer = await c.post("/events", json={"id": name, "type": "t.x"}, headers=auth)
                assert answer.status_code == 202, answer.text

        for number in range(100):
            await one(f"warm-{number}")
        began = time.perf_counter()
        await asyncio.gather(*(one(f"e-{number}") for number in range(count)))
        return count / (time.perf_counter() - began)


def _measure(extra: list[str], label: str, count: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="flowlang-serve-events-"))
    try:
        (folder / "nothing.yaml").write_text(WORKFLOW)
        arguments = [
            str(folder / "nothing.yaml"),
            "--public-url", PUBLIC_URL,
            "--no-signatures",
            "--event-token", "event_token",
            "--host", "127.0.0.1",
            "--log-format", "text",
            *(part.replace("FOLDER", str(folder)) for part in extra),
        ]  # fmt: skip
        server = ServeProcess(arguments, {**secret_environment(), "TMPDIR": str(folder)}).start()
        try:
            rate = asyncio.run(_load(server.url, count))
        finally:
            server.terminate()
        print(f"{label}: {rate:,.0f} events/s ({count} events, {AT_ONCE} at once)", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    if not os.environ.get("ONLY_WORKERS"):
        _measure(["--no-events-store"], "1 process, --no-events-store", count)
        _measure(["--events-store", "FOLDER/events.db"], "1 process, --events-store", count)
    if shutil.which("redis-server") is None:
        print("no redis-server: --workers 2 not measured")
        return
    redis = RedisServer()
    redis.start()
    try:
        for extra, label in (
            (["--no-events-store"], "--workers 2, --no-events-store"),
            (["--events-store", "FOLDER/events.db"], "--workers 2, one --events-store"),
        ):
            calls = ["--store", redis.url, "--state-key", "state_key"]
            prefix = ["--key-prefix", f"bench-{os.getpid()}-{time.time_ns()}:"]
            _measure(["--workers", "2", *calls, *prefix, *extra], label, count)
    finally:
        redis.kill()


if __name__ == "__main__":
    main()
