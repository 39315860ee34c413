"""Red team, round 2 of the Celery worker side (issue 13): reproductions of what the fixes
(RequeueingTask, the shutdown watchdog, the prefork metrics folder) still get wrong. Each test
fails now and states the invariant it checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from distributed_support import Kit, kit, one_action_automations  # noqa: F401 (kit)
from support import clean_env

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
