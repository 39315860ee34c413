"""Print the benchmark table (ns per call and ratios) from the JSON of the last `make bench` run."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from workloads import BY_KEY

DEFAULT = Path(__file__).resolve().parent.parent / ".benchmarks" / "latest.json"
PEERS = ("jinja2", "liquid", "jmespath", "chevron")
RENDER_COLUMNS = [
    "workload", "baseline", "flowlang cython", "×baseline", "flowlang python",
    "jinja2", "liquid", "jmespath", "chevron", "fastest peer ÷ cython",
]  # fmt: skip
COMPILE_COLUMNS = ["compile", "flowlang cold", "flowlang memoized", "jinja2", "liquid",
                   "jmespath (cache purged)", "chevron (tokenize)"]  # fmt: skip


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ns(stats: dict[str, float], batch: int) -> float:
    return stats["median"] / batch * 1e9


def _fmt(ns: float) -> str:
    return f"{ns / 1000:.1f} µs" if ns >= 10_000 else f"{ns:.0f} ns"


def _separator(columns: list[str]) -> str:
    return "|" + "---|" * len(columns)


def main(path: Path) -> int:
    data = json.loads(path.read_text())
    table: dict[str, dict[str, float]] = defaultdict(dict)
    extras: dict[str, dict[str, float]] = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        table[info["workload"]][info["contender"]] = _ns(bench["stats"], info["batch"])
        extras[info["workload"]] = info
    print(
        f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
        f"python {data['machine_info']['python_version']}, {data['datetime'][:19]}\n"
    )
    print(_row(RENDER_COLUMNS))
    print(_separator(RENDER_COLUMNS))
    gaps: list[str] = []
    for workload, row in sorted(table.items()):
        if not workload.startswith("W") or workload.startswith("W7"):
            continue
        cython = row["flowlang-cython"]
        fastest_name, fastest_peer = min(
            ((peer, row[peer]) for peer in PEERS if peer in row), key=lambda item: item[1]
        )
        cells = [workload, _fmt(row["baseline"]), _fmt(cython), f"{cython / row['baseline']:.2f}×"]
        cells += [_fmt(row["flowlang-python"])]
        for peer in PEERS:
            if peer in row:
                cells.append(_fmt(row[peer]))
            else:
                gaps.append(f"{workload}, {peer}: {BY_KEY[workload].mustache_gap}")
                cells.append(f"— ({len(gaps)})")
        print(_row([*cells, f"{fastest_peer / cython:.0f}× ({fastest_name})"]))
    for number, gap in enumerate(gaps, 1):
        print(f"({number}) {gap}")
    print("\n" + _row(COMPILE_COLUMNS))
    print(_separator(COMPILE_COLUMNS))
    for workload, row in sorted(table.items()):
        if workload.startswith("W7"):
            names = ("flowlang-cold", "flowlang-memoized", *PEERS)
            print(_row([workload, *(_fmt(row[name]) if name in row else "—" for name in names)]))
    print("\n" + _row(["flow workload", "hand-written", "flowlang", "ratio"]))
    print("|---|---|---|---|")
    for workload, row in sorted(table.items()):
        if workload.startswith(("F", "A")) and "baseline" in row:
            theirs = row["baseline"]
            for contender in sorted(name for name in row if name.startswith("flowlang")):
                ours = row[contender]
                label = workload + contender.removeprefix("flowlang").replace("-", " ")
                print(_row([label, _fmt(theirs), _fmt(ours), f"{ours / theirs:.2f}×"]))
    concurrency = extras.get("F4 10k suspended")
    if concurrency:
        print(
            f"\n10,000 concurrent runs suspended at collect_input: "
            f"{concurrency['starts_per_second']:,.0f} starts/s, "
            f"{concurrency['resumes_per_second']:,.0f} resumes/s, "
            f"{concurrency['bytes_per_suspended_run'] / 1024:.1f} KiB per suspended run"
        )
    matching = table.get("A1 matching 1k workflows x 100k events")
    if matching:
        print(
            f"\nmatching, 1,000 workflows: {1e9 / matching['flowlang']:,.0f} events/s "
            f"(hand-written {1e9 / matching['baseline']:,.0f} events/s)"
        )
    slow = extras.get("F5 1k on slow endpoint")
    if slow:
        print(
            f"1,000 concurrent runs each waiting 0.2 s on a loopback endpoint (50 in flight): "
            f"{slow['runs_per_second']:,.0f} runs/s, peak "
            f"{slow['peak_bytes_per_run'] / 1024:.1f} KiB per run"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
