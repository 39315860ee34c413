"""Red team, round 2 of the Celery worker side (issue 13): reproductions of what the fixes
(RequeueingTask, the shutdown watchdog, the prefork metrics folder) still get wrong. Each test
fails now and states the invariant it checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from distributed_support import Kit, kit, one_action_automations  # noqa: F401 (kit)
from services import RedisServer
from support import clean_env

from flowlang.distributed.celery_app import make_app
from flowlang.distributed.deliverer import Deliverer

pytest.importorskip("celery")

ROOT = Path(__file__).resolve().parents[1]
#: A one-action workflow; the worker loads a newer version (the replay is from the record's text).
REPLAY_V1 = """\
workflow: redteam_replay2
trigger: call.ended
actions:
  - {name: first, type: api_request, endpoint: https://crm.example.com/v1}
"""


class _Runner:
    """A worker loop's objects for tasks._replay: automations, a store, a deliverer."""

    def __init__(self, automations: Any, store: Any, *, lease: float) -> None:
        self.automations = automations
        self.store = store
        self.deliverer = Deliverer(automations, store, "redteam2:1:abcd", lease=lease)


def test_the_watchdogs_exit_removes_the_prefork_metrics_folder(tmp_path: Path) -> None:
    """Finding R2-2: `flowlang worker --pool prefork --metrics-port` makes a private
    multiprocess folder (flowlang-worker-metrics-*) that only _Metrics.close removes, in the
    `finally` of worker_from_command_line. The shutdown watchdog ends the process with
    os._exit(0) (loop._end_process), which skips that `finally`: every worker the watchdog
    ends leaves its folder (and its processes' .db files) behind in TMPDIR. Invariant: the
    folder is removed however the worker ends, the watchdog's exit included."""
    script = textwrap.dedent(
        """
        import argparse
        from flowlang.cli import worker_console
        from flowlang.distributed import loop
        arguments = argparse.Namespace(metrics_port=0, metrics_host="127.0.0.1", pool="prefork")
        metrics = worker_console._start_metrics(arguments)
        assert metrics.folder is not None and metrics.folder.is_dir()
        loop._end_process()  # what the watchdog calls SHUTDOWN_GRACE after the last task
        """
    )
    env = {**clean_env(), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    left = sorted(p.name for p in tmp_path.glob("flowlang-worker-metrics-*"))
    assert left == [], f"the watchdog's os._exit left the metrics folder behind: {left}"


def test_a_message_that_always_fails_is_not_tried_for_ever(redis_server: RedisServer) -> None:
    """Finding R2-1: RequeueingTask (celery_app.py) turns whatever a task raises into
    Reject(requeue=True) after a 1 s pause, with no count of tries, no delivery limit and no
    dead letter: a message whose task fails every time is taken again about once a second for
    as long as the worker runs, holding a pool slot each time, and is never set aside where an
    operator would see it (flowlang's dead letters are only written by the Deliverer).
    Invariant: a message that fails on every try is set aside (dead-lettered, or at least
    off its queue) after a bounded number of tries (here 5)."""
    from celery.contrib.testing.worker import start_worker as celery_worker

    queue_prefix = f"flrt2{os.getpid()}x."
    url = f"{redis_server.url[:-2]}/9"
    app = make_app(url, queue_prefix=queue_prefix)
    runs: list[float] = []

    @app.task(name="flowlang.deliver", ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def deliver(**_: Any) -> None:
        runs.append(time.monotonic())
        raise RuntimeError("this message fails every time (a poison message)")

    client = redis.Redis.from_url(url)
    try:
        with celery_worker(app, pool="threads", concurrency=1, perform_ping_check=False):
            app.send_task("flowlang.deliver", kwargs={"n": 1}, queue=f"{queue_prefix}actions")
            deadline = time.monotonic() + 12
            while len(runs) <= 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        left = client.llen(f"{queue_prefix}actions") + client.hlen("unacked")
    finally:
        client.delete(f"{queue_prefix}actions")
        client.close()
    assert runs, "the task never ran"
    assert len(runs) <= 5, (
        f"a message that always fails was tried {len(runs)} times in "
        f"{runs[-1] - runs[0]:.1f} s and is still on the broker ({left} left): it is "
        "requeued for ever, never dead-lettered"
    )
