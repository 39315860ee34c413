"""The Celery floor for ``benchmarks/test_automations_throughput.py``: a Celery worker with
flowlang's app (:func:`flowlang.distributed.celery_app.make_app`: acks late, prefetch 1, JSON,
no result backend, the same queues) and the same worker options as ``flowlang worker`` (the
threads pool, ``--concurrency`` threads, no mingle, no gossip, no task events), running tasks
that do next to nothing. What one ``flowlang worker`` delivers per second, against what Celery
itself runs per second on the same broker with the same settings, is the limit measured.

Two tasks (both on the actions queue, where ``flowlang.deliver`` goes):

- ``flowlang.floor.noop(counts, n, total)``: one Redis round trip on the store (a pipeline:
  ``HINCRBY counts n 1``, ``HLEN counts``, ``SET {counts}:first NOW NX``), so the benchmark
  can check that every task ran exactly once without a result backend; the task that brings
  the hash to ``total`` fields writes ``{counts}:end`` once (times are ``time.monotonic()``,
  the machine-wide clock);
- ``flowlang.floor.post(key, n)``: one HTTPS POST of ``{"n": n}`` with ``Idempotency-Key:
  {key}{n}`` on an ``httpx.Client`` (sync, one per worker thread, keep-alive, trusting
  ``--ca-file``) to ``--url``, the benchmark's receiver, which counts the keys.

Run by the benchmark in its own process group (killed by group):

    python benchmarks/celery_floor.py --broker URL --queue-prefix P --concurrency N \\
        --store redis://... [--url https://... --ca-file CA]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from typing import Any

from celery import Celery

from flowlang.distributed.celery_app import make_app, publish_options
from flowlang.distributed.messages import queue_names

NOOP_TASK = "flowlang.floor.noop"
POST_TASK = "flowlang.floor.post"


def floor_app(broker: str, queue_prefix: str) -> Celery:
    """flowlang's Celery app (its settings and queues) on ``broker``, for publishing."""
    return make_app(broker, queue_prefix=queue_prefix)


def publish(app: Celery, task: str, args: list[Any]) -> None:
    """Send one floor task, bounded as flowlang's publishes are."""
    app.send_task(task, args=args, **publish_options(app))


def register(app: Celery, store: str, url: str | None, ca_file: str | None) -> None:
    """Add the two floor tasks to ``app``."""
    import httpx
    import redis

    client = redis.Redis.from_url(store, socket_timeout=10)
    local = threading.local()

    @app.task(name=NOOP_TASK)
    def noop(counts: str, n: int, total: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(counts, str(n), 1)
        pipe.hlen(counts)
        pipe.set(f"{counts}:first", repr(time.monotonic()), nx=True)
        _, distinct, _ = pipe.execute()
        if distinct == total:
            client.set(f"{counts}:end", repr(time.monotonic()), nx=True)

    @app.task(name=POST_TASK)
    def post(key: str, n: int) -> None:
        http = getattr(local, "client", None)
        if http is None:
            http = local.client = httpx.Client(verify=ca_file or True, timeout=15.0)
        response = http.post(url or "", json={"n": n}, headers={"Idempotency-Key": f"{key}{n}"})
        response.raise_for_status()
        response.json()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue-prefix", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--url")
    parser.add_argument("--ca-file")
    arguments = parser.parse_args(argv)
    app = make_app(arguments.broker, queue_prefix=arguments.queue_prefix)
    register(app, arguments.store, arguments.url, arguments.ca_file)
    # as flowlang.cli.worker_console._run_worker starts it (the threads pool)
    worker = app.Worker(
        pool_cls="threads",
        concurrency=arguments.concurrency,
        queues=list(queue_names(arguments.queue_prefix)),
        hostname=f"flowlang-floor-{os.getpid()}@{socket.gethostname()}",
        loglevel="WARNING",
        without_mingle=True,
        without_gossip=True,
        quiet=True,
        redirect_stdouts=False,
    )
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
