"""The server side of ``benchmarks/test_serve.py``: ``flowlang serve`` run exactly as the command
runs it (same settings, observer, JSON logs, uvicorn configuration), with one more route on the
same Starlette application: ``POST /bare``, the baseline, reads the form body and answers a
fixed TwiML document the size of flowlang's Gather answer.

    python benchmarks/serve_server.py serve FILE... --public-url ... [flowlang serve options]

Experiments (never set by ``make bench-serve``): ``FLOWLANG_BENCH_PROFILE=FILE`` runs the
whole process under cProfile and writes the statistics to FILE when it stops (SIGTERM);
``FLOWLANG_BENCH_SERVE_LOG_LEVEL=WARNING`` drops the ``flowlang.serve`` logger's per-segment
info lines; ``FLOWLANG_BENCH_RECORD_JSON=orjson`` writes call records with ``orjson.dumps`` of
the dataclass itself instead of ``orjson.dumps(dataclasses.asdict(record))`` (same bytes,
no deep copy).
"""

from __future__ import annotations

import cProfile
import logging
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import flowlang.cli.serve_console as console
from flowlang.cli import main

#: What the baseline answers: the shape and size (412 bytes) of flowlang's answer to a Gather
#: of examples/flows/support_menu.yaml's main menu.
BARE_TWIML = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="dtmf" '
    b'action="https://ivr.example.com/bare?seq=2" method="POST" numDigits="1" '
    b'finishOnKey="" timeout="6" actionOnEmptyResult="true"><Say>For billing press 1. For '
    b"technical support press 2. To hear the status of your open ticket press 3. To speak to "
    b"an operator press 0. To hear these options again press star.</Say></Gather></Response>"
)


async def bare(request: Request) -> Response:
    """The baseline endpoint: read and parse the form, answer the fixed document."""
    body = await request.body()
    parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    return Response(BARE_TWIML, media_type="application/xml; charset=utf-8")


_create_app = console.create_app


def create_app(server: Any, on_started: Callable[[], None] | None = None) -> Starlette:
    """flowlang's application with the baseline route in front of its own."""
    app = _create_app(server, on_started)
    app.router.routes.insert(0, Route("/bare", bare, methods=["POST"]))
    return app


def _experiments() -> None:
    level = os.environ.get("FLOWLANG_BENCH_SERVE_LOG_LEVEL")
    if level:
        logging.getLogger("flowlang.serve").setLevel(level)


def run() -> int:
    console.create_app = create_app  # type: ignore[assignment]
    _experiments()
    profile_to = os.environ.get("FLOWLANG_BENCH_PROFILE")
    if not profile_to:
        return main(sys.argv[1:])
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(main, sys.argv[1:])
    finally:
        profiler.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(run())
