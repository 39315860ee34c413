"""Red team, round 2 of the Celery worker side (issue 13): reproductions of what the fixes
(RequeueingTask, the shutdown watchdog, the prefork metrics folder) still get wrong. Each test
fails now and states the invariant it checks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery_support import muting_proxy
from distributed_support import Kit, kit, one_action_automations  # noqa: F401 (kit)
from services import RedisServer
from support import StatusHttp, clean_env

from flowlang.cli.worker_console import event_publisher
from flowlang.distributed import tasks
from flowlang.distributed.celery_app import make_app
from flowlang.distributed.deliverer import Deliverer
from tests.serve_support import EVENT_TOKEN, example_workflows, serving
from tests.services import RabbitMQ, rabbitmq  # noqa: F401 (the fixture)

pytest.importorskip("celery")

ROOT = Path(__file__).resolve().parents[1]
AUTH = {"Authorization": f"Bearer {EVENT_TOKEN}"}
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


def _event_body(event_id: str) -> bytes:
    return json.dumps(
        {"id": event_id, "type": "contact.updated", "properties": {"name": "Ann", "tags": ["Vip"]}}
    ).encode()


def test_serve_broker_on_rabbitmq_publishes_again_once_a_stalled_broker_answers(
    rabbitmq: RabbitMQ,  # noqa: F811
) -> None:
    """Finding R2-3: ``serve --broker`` on RabbitMQ. event_publisher's docstring says each
    publish is one try within ``timeout`` and its thread is given back "when the broker
    answered or gave up". The confirm's wait is bounded, but once it times out kombu's
    producer pool (task_publish_retry is off here) throws the connection away with a graceful
    close (Producer.__exit__ -> resource.replace -> amqp Channel.close), which waits for the
    broker's Close-Ok with no timeout: with the broker's answers lost for a moment that
    thread is held for good, even after the broker answers again. Measured with the defaults
    (8 threads): each stall of a few seconds leaves one more publish thread stuck for good
    (1, 2, 3 after three stalls), so after 8 stalls every event is a 503 ("8 publishes are
    waiting for the broker already") until the server is restarted. Here one thread makes
    one stall enough. Invariant: once the broker answers again, events are published again
    (202) within ``timeout`` plus a few seconds (here: within 20 s)."""
    with muting_proxy(5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
        publish = event_publisher(url, rabbitmq.queue_prefix, threads=1, timeout=1.0, wait=5.0)

        async def main() -> list[tuple[int, float]]:
            async with serving(workflows=example_workflows(), publish_events=publish) as served:
                client = served.client
                first = await client.post("/events", content=_event_body("e0"), headers=AUTH)
                assert first.status_code == 202, first.text
                proxy.mute()  # the broker's answers (the confirm) are lost
                began = time.monotonic()
                stalled = await client.post(
                    "/events", content=_event_body("e1"), headers=AUTH, timeout=60
                )
                answers = [(stalled.status_code, time.monotonic() - began)]
                proxy.muted.clear()  # the broker answers again
                began = time.monotonic()
                for attempt in range(40):  # bounded: at most 40 tries in about 20 s
                    sent = _event_body(f"e2-{attempt}")
                    answer = await client.post("/events", content=sent, headers=AUTH, timeout=30)
                    answers.append((answer.status_code, time.monotonic() - began))
                    if answer.status_code == 202 or time.monotonic() - began > 20:
                        break
                    await asyncio.sleep(0.5)
            return answers

        answers = asyncio.run(main())
    assert answers[0][0] == 503, answers
    assert answers[-1][0] == 202, (
        f"still 503 {answers[-1][1]:.0f} s after the broker answered again "
        f"({len(answers) - 1} tries): the stalled publish still holds its thread; {answers[:3]}"
    )


def test_a_replay_whose_outcome_write_outlasts_its_tries_is_not_sent_again_after_the_lease(
    kit: Kit,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding R2-6: tasks._replay says a replay from a dead letter's own text is "under its
    action's lease and only while the ledger does not say it is delivered (replay_leased: a
    redelivered message sends nothing twice)". replay_leased first *forgets* the ledger's
    dead_lettered entry (forget_dead), sends, then writes the outcome (FINISH_TRIES tries).
    When the store is down for those few tries (FINISH_TRIES x FINISH_PAUSE, about a second
    by default) the message is requeued with the lease kept, but the ledger now holds nothing:
    once the lease lapses, the redelivered message takes the lease, finds no outcome
    ("none") and sends the action again. Invariant (the docstring's, and that of
    test_shared_replay's finding-1 test): across the replay and its redeliveries, the action
    is sent at most once."""
    from flowlang.distributed import replay as replay_module
    from flowlang.errors import SharedStoreError

    monkeypatch.setattr(replay_module, "FINISH_PAUSE", 0.01)

    async def work() -> tuple[list[str], list[str]]:
        failing = one_action_automations(StatusHttp(400), REPLAY_V1)
        async with failing:
            await failing.dispatch({"id": "evt-r2-6", "type": "call.ended", "properties": {}})
        (record,) = failing.dead_letters.records
        http = StatusHttp(200)
        worker = one_action_automations(http, REPLAY_V1.replace("/v1", "/v2"))
        store = kit.store()
        outcomes: list[str] = []
        try:
            async with worker:
                runner = _Runner(worker, store, lease=1.0)

                async def down(*_: Any, **__: Any) -> str:
                    raise SharedStoreError("shared store: finish_replay failed: down")

                store.finish_replay = down  # type: ignore[method-assign]
                try:
                    step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                    outcomes.append(step.outcome)
                except SharedStoreError:
                    outcomes.append("requeued")
                del store.finish_replay  # the store answers again
                await asyncio.sleep(1.5)  # the lease kept by the first try lapses
                step = await tasks._replay(runner, dict(record))  # type: ignore[arg-type]
                outcomes.append(step.outcome)
        finally:
            await store.aclose()
        return http.sent, outcomes

    sent, outcomes = asyncio.run(asyncio.wait_for(work(), 30))
    assert len(sent) == 1, f"the action was sent {len(sent)} times; outcomes {outcomes}"
