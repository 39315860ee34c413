"""Console: the dead letters of a local store: ``flowlang replay STORE`` and ``flowlang
deadletters export|import``.

Replay takes the dead letters the store had when it began, one at a time; each replayed record
leaves the store in the same transaction that adds what failed again (a crash keeps it whole).
Export writes each record as one ASCII JSON line (today's ``flowlang.deadletter/1``, so
``flowlang replay FILE.jsonl`` works on it); import adds the records of such a file in one
transaction per thousand records, leaving out records the store already holds (so a rerun
after a crash part-way adds each record once), reporting each line that is not one (file:line).
"""

from __future__ import annotations

__all__ = ["deadletters_from_command_line", "replay_store"]

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from flowlang.automations.dispatch import DEAD_LETTER_FORMAT, Automations, DeadLetterStore
from flowlang.automations.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_SKIP,
    RecordError,
    check_record_file,
    decoded_lines,
    encode_record,
)
from flowlang.automations.store import LocalStore
from flowlang.cli.inputs import EXIT_FAILED, EXIT_OK
from flowlang.cli.terminal import printable
from flowlang.expr.shared import MAX_SHOWN_ERROR, shorten
from flowlang.flow.model import FlowDocumentError


def _warn(message: str) -> None:
    print(f"flowlang: {printable(message, one_line=True)}", file=sys.stderr, flush=True)


async def replay_store(
    automations: Automations, again: DeadLetterStore, path: Path, out: TextIO
) -> int:
    """Replay the dead letters of the store ``path`` with ``automations`` (whose dead letters
    go to ``again``, in memory); the exit status (1 when some remain)."""
    redactor = automations.redactor
    counts: Counter[str] = Counter()
    problems = 0
    with LocalStore(path) as store:
        async with automations:
            for number, record in store.dead_letters(upto=store.last_dead()):
                counts["records"] += 1
                if isinstance(record, str):
                    problems += 1
                    _warn(f"{record}: skipped (left in the store)")
                    continue
                mark = len(again.records)
                try:
                    deliveries = await automations.replay(record)
                except (ValueError, FlowDocumentError) as error:
                    problems += 1
                    text = redactor.text(f"{path}: dead letter {number}: cannot replay: {error}")
                    _warn(shorten(text, MAX_SHOWN_ERROR) + " (left in the store)")
                    continue
                except BaseException:  # interrupted: this record stays in the store
                    del again.records[mark:]
                    raise
                for delivery in deliveries:
                    counts[delivery.outcome] += 1
                store.replace_dead([number], list(again.records)[mark:], automations.clock.now())
    remaining = counts["dead_lettered"] + problems
    out.write(
        redactor.text(
            f"replayed {counts['records']} records: delivered {counts['delivered']}, "
            f"dead-lettered again {counts['dead_lettered']}, skipped {counts['skipped']}\n"
        )
    )
    return EXIT_FAILED if remaining else EXIT_OK


def _export(store_path: Path, output: str | None, out: TextIO) -> int:
    if not store_path.exists():
        raise FileNotFoundError(f"store {store_path} does not exist")
    with LocalStore(store_path) as store:
        if output is None:
            return _write_records(store, out)
        target = Path(output)
        check_record_file(target, "export file")
        temporary = target.with_name(f"{target.name}.{os.getpid()}.exporting")
        try:
            with temporary.open("w", encoding="ascii") as handle:
                status = _write_records(store, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        finally:
            if temporary.exists():
                temporary.unlink()
        return status


def _write_records(store: LocalStore, handle: TextIO) -> int:
    status = EXIT_OK
    for _, record in store.dead_letters():
        if isinstance(record, str):
            _warn(f"{record}: not exported")
            status = EXIT_FAILED
            continue
        handle.write(encode_record(record))
    handle.flush()
    return status


def _import(store_path: Path, source: Path) -> int:
    """Import the records of ``source`` a batch per transaction, leaving out those the store
    already holds: a rerun after a crash part-way adds each record once."""
    check_record_file(source, "dead-letter file")
    if not source.exists():
        raise FileNotFoundError(f"dead-letter file {source} does not exist")
    skipped = 0

    def records(handle: BinaryIO) -> Iterator[tuple[dict[str, Any], float]]:
        nonlocal skipped
        label = str(source)
        for number, raw, record in decoded_lines(handle, MAX_RECORD_BYTES, MAX_RECORD_SKIP, label):
            why: str | None = None
            if raw is None or record is None:
                why = f"{label}:{number}: longer than {MAX_RECORD_BYTES} bytes"
            elif isinstance(record, RecordError):
                why = record.where(label, number)
            elif record.get("format") != DEAD_LETTER_FORMAT:
                why = f"{label}:{number}: not a {DEAD_LETTER_FORMAT} record"
            if why is not None:
                skipped += 1
                _warn(f"{why} (skipped)")
                continue
            assert isinstance(record, dict)
            yield record, _recorded_at(record)

    with LocalStore(store_path) as store, source.open("rb") as handle:
        imported, held = store.import_dead(records(handle))
    already = f" ({held} already in it, not added again)" if held else ""
    print(
        f"imported {imported} dead letters into {store_path}{already}", file=sys.stderr, flush=True
    )
    return EXIT_FAILED if skipped else EXIT_OK


def _recorded_at(record: dict[str, Any]) -> float:
    at = record.get("recorded_at")
    if isinstance(at, (int, float)) and not isinstance(at, bool) and abs(at) < 2**53:
        return float(at)
    return 0.0


def deadletters_from_command_line(arguments: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """``flowlang deadletters export|import``: the exit status."""
    store = Path(arguments.store)
    if arguments.deadletters_action == "export":
        return _export(store, arguments.output, out)
    return _import(store, Path(arguments.file))
