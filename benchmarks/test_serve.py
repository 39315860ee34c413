"""``flowlang serve`` (issue 12, Performance): webhook throughput of a Gather round trip against
a bare Starlette endpoint on the same uvicorn, p50 and p99 latency at 200 concurrent simulated
calls, and memory per waiting call in the Redis store, in one run.

Servers: two ``flowlang serve`` processes run by the command's own code
(``benchmarks/serve_server.py``: same settings, observer, JSON logs and uvicorn configuration),
one with the in-process store and one with Redis (a ``redis-server`` started here on a free
port), each serving ``examples/flows/support_menu.yaml`` offline (``--responses``) with
signatures checked, and each with one more route on the same Starlette application:
``POST /bare`` reads the form body and answers a fixed TwiML Gather document of the same size.
Every process runs in its own process group and is killed by group.

The client (``benchmarks/serve_load.py``, this process) is a lean Twilio: raw HTTP/1.1 over
keep-alive asyncio connections, one per simulated call, with every request signed as Twilio
signs it (the Gather's ``seq`` is in the URL, so the HMAC is computed per request). A call
presses ``*`` at the main menu, whose ``*`` option leads back to the menu: every request is a
real resume -> run -> wait -> TwiML round trip.

- throughput: 200 calls are started (first webhook, untimed), then each does ROUND_TRIPS
  Gather round trips concurrently; requests per second, best of ROUNDS interleaved rounds;
- latency: 200 concurrent calls, each its first webhook then ROUND_TRIPS round trips;
- memory: Redis ``used_memory`` before and after MEMORY_CALLS calls are left waiting, and
  ``MEMORY USAGE`` of one call's keys.

Every answer is checked (a 200 with a Gather whose action carries the next ``seq``) and the
documents are parsed before any timing. No timing assertions. Outside `make test`:

    make bench-serve
"""

from __future__ import annotations

import asyncio
import json
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from serve_load import (
    BARE,
    PUBLIC_URL,
    Connection,
    Pass,
    ServerProcess,
    SimulatedCall,
    Target,
    call_fields,
    cpu_seconds,
    drive,
    flow_target,
    new_calls,
)

from tests.services import REDIS_SERVER, RedisServer, missing_service
from tests.twilio_sim import twilio_signature

ROOT = Path(__file__).resolve().parent.parent
FLOW_FILE = ROOT / "examples" / "flows" / "support_menu.yaml"
RESPONSES = ROOT / "examples" / "flows" / "data" / "support_menu.responses.yaml"
FLOW = "support-menu"
TOKEN = "bench-twilio-auth-token-5d1e"
STATE_KEY = "bench-state-key-" + "k" * 40
PREFIX = "fl:"
#: Concurrent simulated calls (and connections) in every pass.
CALLS = 200
#: Gather round trips per call and pass (the run's max_steps, 1,000, is far off).
ROUND_TRIPS = 20
#: Throughput rounds, interleaving the contenders; each one's best round is kept.
ROUNDS = 3
#: Calls left waiting in Redis to measure memory per call.
MEMORY_CALLS = 2_000
MENU_TEXT = "For billing press 1. For technical support press 2."


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The Redis server and the two flowlang servers (in-process store, Redis store)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        missing_service(f"{REDIS_SERVER} is not installed")
    folder = tmp_path_factory.mktemp("serve-bench")
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("FLOWLANG_SECRET_")
    }
    env["FLOWLANG_SECRET_TWILIO_TOKEN"] = TOKEN
    env["FLOWLANG_SECRET_STATE_KEY"] = STATE_KEY
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    common = [
        str(FLOW_FILE),
        "--public-url", PUBLIC_URL,
        "--twilio-key", "twilio_token",
        "--state-key", "state_key",
        "--responses", str(RESPONSES),
    ]  # fmt: skip
    store = RedisServer()
    memory = ServerProcess(common, env, folder / "memory.log")
    shared = ServerProcess(
        [*common, "--store", store.url, "--key-prefix", PREFIX], env, folder / "redis.log"
    )
    try:
        store.start()
        memory.start()
        shared.start()
        yield {"redis": store, "memory_server": memory, "redis_server": shared}
    finally:
        memory.stop()
        shared.stop()
        store.close()


# --- checks before timing -------------------------------------------------------------------


async def _post(port: int, request: bytes) -> tuple[int, bytes]:
    connection = await Connection.open(port)
    try:
        return await connection.send(request)
    finally:
        connection.close()


def _gather(document: bytes, action: str) -> ElementTree.Element:
    """The document's Gather, checked: TwiML, one digit, ``action``, the menu's text."""
    root = ElementTree.fromstring(document)
    assert root.tag == "Response", document
    gather = root.find("Gather")
    assert gather is not None, document
    assert gather.get("action") == action, (gather.get("action"), action)
    assert gather.get("numDigits") == "1" and gather.get("method") == "POST"
    say = gather.find("Say")
    assert say is not None and (say.text or "").startswith(MENU_TEXT), document
    return gather


async def _check(servers: dict[str, Any]) -> dict[str, int]:
    """Every contender answers right before anything is timed; the answers' sizes."""
    sizes: dict[str, int] = {}
    flow = flow_target(FLOW)
    # The client's signature is Twilio's (the simulator's own, independent code).
    (call,) = new_calls(flow, TOKEN, 1, "check0")
    request = call.request(7)
    fields = call_fields(call.call_id, Digits="*", FinishedOnKey="")
    expected = twilio_signature(TOKEN, f"{PUBLIC_URL}/voice/{FLOW}?seq=7", fields)
    assert f"X-Twilio-Signature: {expected}\r\n".encode() in request
    for name in ("memory_server", "redis_server"):
        port = servers[name].port
        (call,) = new_calls(flow, TOKEN, 1, f"check{name[0]}")
        # A request signed with another token is refused: the signature is really checked.
        (forged,) = new_calls(flow, "not-the-token", 1, f"forge{name[0]}")
        status, _ = await _post(port, forged.request(None))
        assert status == 403, status
        status, first = await _post(port, call.request(None))
        assert status == 200 and call.answered(status, first), first
        root = ElementTree.fromstring(first)
        assert (root.findtext("Say") or "").startswith("Thanks for calling Acme support")
        _gather(first, f"{PUBLIC_URL}/voice/{FLOW}?seq=1")
        for seq in (1, 2):
            status, answer = await _post(port, call.request(seq))
            assert status == 200 and call.answered(status, answer), answer
            _gather(answer, f"{PUBLIC_URL}/voice/{FLOW}?seq={seq + 1}")
        sizes[name] = len(answer)
        (plain,) = new_calls(BARE, TOKEN, 1, f"bare{name[0]}")
        status, document = await _post(port, plain.request(1))
        assert status == 200 and plain.answered(status, document)
        _gather(document, f"{PUBLIC_URL}/bare?seq=2")
        sizes["bare"] = len(document)
    assert abs(sizes["bare"] - sizes["memory_server"]) <= 0.1 * sizes["memory_server"], sizes
    client = redis.Redis(port=servers["redis"].port)
    try:
        assert client.exists(f"{PREFIX}call:CAcheckr00000000") == 1  # the record is in Redis
    finally:
        client.close()
    return sizes


# --- measurements -----------------------------------------------------------------------------


#: What flowlang answers when a call cannot go on (a store failure, say): the apology.
APOLOGY = b"<Say>Sorry, something went wrong on our side.</Say>"


def _ok(done: Pass, what: str) -> Pass:
    """``done``, when every answer was right, or the apology (a failure the server reported:
    counted and shown in the table, never hidden). Anything else fails the benchmark."""
    wrong = [answer for answer in done.bad if answer[0] != 200 or APOLOGY not in answer[1]]
    assert not wrong, f"{what}: {len(wrong)} wrong answers, the first: {wrong[0]!r}"
    return done


#: Apologies heard per scenario over the whole run (each ends its call early).
APOLOGIES: dict[str, int] = {}


def _count(name: str, done: Pass) -> Pass:
    APOLOGIES[name] = APOLOGIES.get(name, 0) + len(_ok(done, name).bad)
    return done


async def _started(port: int, target: Target, label: str, name: str) -> list[SimulatedCall]:
    """CALLS new calls past their first webhook (untimed), waiting at the menu."""
    calls = new_calls(target, TOKEN, CALLS, label)
    done = _count(name, await drive(port, calls, first=True, round_trips=0))
    failed = {id(call) for call in calls if call.seq == 0}
    return [call for call in calls if id(call) not in failed] if done.bad else calls


async def _throughput(servers: dict[str, Any]) -> dict[str, Pass]:
    """Best of ROUNDS interleaved rounds of CALLS x ROUND_TRIPS round trips per contender."""
    redis_pid = servers["redis"].process.pid
    contenders = (
        ("bare", "memory_server", BARE),
        ("memory", "memory_server", flow_target(FLOW)),
        ("bare_redis_process", "redis_server", BARE),
        ("redis", "redis_server", flow_target(FLOW)),
    )
    best: dict[str, Pass] = {}
    for round_number in range(ROUNDS):
        for name, server_name, target in contenders:
            server = servers[server_name]
            calls = await _started(server.port, target, f"t{round_number}{name[:2]}", name)
            watch = {"server": server.pid, "redis": redis_pid}
            done = _count(
                name,
                await drive(server.port, calls, first=False, round_trips=ROUND_TRIPS, watch=watch),
            )
            assert done.requests + len(done.bad) * ROUND_TRIPS >= len(calls) * ROUND_TRIPS
            if name not in best or done.rate > best[name].rate:
                best[name] = done
    return best


async def _latency(servers: dict[str, Any]) -> dict[str, Pass]:
    """CALLS concurrent calls, each its first webhook and then ROUND_TRIPS round trips."""
    out = {}
    for name, server_name, target in (
        ("bare", "memory_server", BARE),
        ("memory", "memory_server", flow_target(FLOW)),
        ("redis", "redis_server", flow_target(FLOW)),
    ):
        calls = new_calls(target, TOKEN, CALLS, f"l{name[:2]}")
        port = servers[server_name].port
        done = _count(name, await drive(port, calls, first=True, round_trips=ROUND_TRIPS))
        assert done.requests + len(done.bad) * ROUND_TRIPS >= CALLS * (1 + ROUND_TRIPS)
        out[name] = done
    return out


async def _memory(servers: dict[str, Any]) -> dict[str, float]:
    """Redis memory per waiting call: ``used_memory`` over MEMORY_CALLS new waiting calls,
    and MEMORY USAGE of one call's keys."""
    client = redis.Redis(port=servers["redis"].port)
    port = servers["redis_server"].port
    try:
        waiting = f"{PREFIX}waiting"
        before_calls, before_keys = client.zcard(waiting), client.dbsize()
        before = int(client.info("memory")["used_memory"])
        for batch in range(MEMORY_CALLS // CALLS):
            await _started(port, flow_target(FLOW), f"m{batch:02d}", "redis")
        after = int(client.info("memory")["used_memory"])
        count = client.zcard(waiting) - before_calls
        one = "CAm0000000000"
        record = client.memory_usage(f"{PREFIX}call:{one}", samples=0) or 0
        claim = client.memory_usage(f"{PREFIX}claim:{one}:0", samples=0) or 0
        length = client.strlen(f"{PREFIX}call:{one}")
        assert count >= 0.99 * MEMORY_CALLS, count
        assert (
            count <= client.dbsize() - before_keys <= 2 * count
        )  # records, and claims not yet lapsed
        assert client.zscore(waiting, one) is not None
        return {
            "calls": float(count),
            "per_call": (after - before) / count,
            "record": float(record),
            "claim": float(claim),
            "record_json": float(length),
        }
    finally:
        client.close()


def _troubles(log: Path) -> list[tuple[str, int]]:
    """The warnings and errors a server logged (a bad signature from the check aside), by
    message with call details cut, most frequent first."""
    seen: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"level":"error"' in line or '"level":"warning"' in line or '"level":"critical"' in line:
            event = json.loads(line).get("event", "")
            if "signature" not in line:
                key = event.split(": ")[-1][:100]
                seen[key] = seen.get(key, 0) + 1
    return sorted(seen.items(), key=lambda item: -item[1])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def test_serve(benchmark: Any, servers: dict[str, Any]) -> None:
    sizes = asyncio.run(_check(servers))
    results: dict[str, Any] = {}

    def measure_all() -> None:
        results["throughput"] = asyncio.run(_throughput(servers))
        results["latency"] = asyncio.run(_latency(servers))
        results["memory"] = asyncio.run(_memory(servers))

    benchmark.group = "flowlang serve"
    benchmark.pedantic(measure_all, rounds=1, iterations=1)
    rates: dict[str, Pass] = results["throughput"]
    latency: dict[str, Pass] = results["latency"]
    memory: dict[str, float] = results["memory"]
    bare = max(rates["bare"].rate, rates["bare_redis_process"].rate)
    print(
        f"\nflowlang serve, {CALLS} concurrent calls, {ROUND_TRIPS} Gather round trips each "
        f"(throughput: best of {ROUNDS} interleaved rounds; ratio against the better bare "
        f"round; latency: each call's first webhook and its round trips; answers "
        f"{sizes['memory_server']} B flowlang, {sizes['bare']} B bare)"
    )
    print(
        f"{'scenario':<28} {'req/s':>7} {'ratio':>6} {'p50':>9} {'p99':>9} "
        f"{'server CPU/req':>15} {'redis CPU/req':>14} {'client CPU/req':>15} {'apologies':>9}"
    )
    rows = (
        ("bare Starlette endpoint", "bare", "bare"),
        ("bare, on the Redis process", "bare_redis_process", None),
        ("flowlang, in-process store", "memory", "memory"),
        ("flowlang, Redis store", "redis", "redis"),
    )
    extra: dict[str, Any] = {}
    for label, name, timed in rows:
        done = rates[name]
        per = 1e6 / done.requests
        p50 = _ms(latency[timed].percentile(0.5)) if timed else ""
        p99 = _ms(latency[timed].percentile(0.99)) if timed else ""
        redis_cpu = f"{done.cpu['redis'] * per:.0f} µs" if name == "redis" else ""
        print(
            f"{label:<28} {done.rate:>7,.0f} {done.rate / bare:>5.2f}× {p50:>9} {p99:>9} "
            f"{done.cpu['server'] * per:>12.0f} µs {redis_cpu:>14} {done.client_cpu * per:>12.0f} µs"
            f" {APOLOGIES.get(name, 0):>9}"
        )
        extra[name] = {
            "rate": round(done.rate),
            "ratio": round(done.rate / bare, 3),
            "server_cpu_us": round(done.cpu["server"] * per),
        }
        if timed:
            extra[name]["p50_ms"] = round(latency[timed].percentile(0.5) * 1e3, 2)
            extra[name]["p99_ms"] = round(latency[timed].percentile(0.99) * 1e3, 2)
    print(
        f"targets: in-process store {rates['memory'].rate / bare:.2f}× (≥ 0.5×), "
        f"Redis {rates['redis'].rate / bare:.2f}× (≥ 0.33×)"
    )
    print(
        f"Redis memory per waiting call: {memory['per_call']:,.0f} B (used_memory over "
        f"{memory['calls']:,.0f} calls); MEMORY USAGE: record {memory['record']:,.0f} B "
        f"({memory['record_json']:,.0f} B of JSON), claim {memory['claim']:,.0f} B"
    )
    for name in ("memory_server", "redis_server"):  # what the servers reported, by kind
        troubles = _troubles(servers[name].log)
        print(f"{name} log: " + (", ".join(f"{n} x {what}" for what, n in troubles) or "clean"))
    print()
    extra["memory"] = memory
    benchmark.extra_info.update(extra)
    assert cpu_seconds(servers["memory_server"].pid) > 0
