"""Memory and speed of ``flowlang automate`` on a long stream, with its local store.

Feeds N events (default 1,000,000) through ``flowlang automate --events - --responses ...
--json --store FILE`` (offline: recorded responses, one action per event, some duplicates),
reads its JSON lines as they come, and at each checkpoint (100k, 500k, 1M by default) prints
the process's resident memory (VmRSS, and the peak VmHWM), events per second so far and the
size of the store. Run: ``make bench-automate-memory`` (or ``python benchmarks/automate_memory.py
[N] [--checkpoints 100000,500000,1000000]``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from support import write_log_workflow

#: Every DUPLICATE_EVERY-th event repeats the one before it.
DUPLICATE_EVERY = 50


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def _feed(stream: IO[bytes], count: int) -> None:
    try:
        number = 0
        for index in range(count):
            if index % DUPLICATE_EVERY != DUPLICATE_EVERY - 1:
                number += 1
            line = f'{{"id": "evt-{number}", "type": "call.ended", "properties": {{}}}}\n'
            stream.write(line.encode())
        stream.close()
    except BrokenPipeError:
        pass


def _size(store: Path) -> int:
    return sum(p.stat().st_size for p in (store, Path(f"{store}-wal")) if p.exists())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", default="100000,500000,1000000")
    options = parser.parse_args()
    checkpoints = sorted(int(c) for c in options.checkpoints.split(",") if int(c) <= options.events)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        write_log_workflow(tmp)
        store = tmp / "store.db"
        command = [
            sys.executable, "-m", "flowlang.cli", "automate", str(tmp / "wf.yaml"),
            "--events", "-", "--responses", str(tmp / "responses.yaml"),
            "--store", str(store), "--json", "--concurrency", "8",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLANG_SECRET_")}
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True
        )
        assert process.stdin is not None and process.stdout is not None
        feeder = threading.Thread(target=_feed, args=(process.stdin, options.events), daemon=True)
        feeder.start()
        print(f"{'events':>10} {'RSS MiB':>8} {'peak MiB':>9} {'events/s':>9} {'store MiB':>10}")
        seen = duplicates = 0
        summary = None
        try:
            for raw in process.stdout:
                line = json.loads(raw)
                if line["kind"] == "summary":
                    summary = line
                    break
                seen += 1
                duplicates += line["duplicate"]
                if checkpoints and seen == checkpoints[0]:
                    checkpoints.pop(0)
                    rss, peak = _memory(process.pid)
                    rate = seen / (time.perf_counter() - started)
                    print(
                        f"{seen:>10,} {rss / 1024:>8.1f} {peak / 1024:>9.1f} {rate:>9,.0f} "
                        f"{_size(store) / 2**20:>10.1f}",
                        flush=True,
                    )
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        elapsed = time.perf_counter() - started
        print(
            f"{seen:,} events ({duplicates:,} duplicates) in {elapsed:,.1f} s: "
            f"{seen / elapsed:,.0f} events/s; exit {status}; summary {summary}"
        )
        return 0 if status == 0 and seen == options.events else 1


if __name__ == "__main__":
    sys.exit(main())
