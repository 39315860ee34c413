"""`--ca-file` for `flowlang automate` and `replay`: a private certificate authority (trustme)
and a loopback HTTPS server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trustme
from servers import Server
from support import automate_argv, cli

WORKFLOW = """
workflow: secure
trigger: call.ended
actions:
  - {name: post, type: api_request, endpoint: "https://127.0.0.1:{port}/echo"}
"""
EVENT = '{"id": "evt-1", "type": "call.ended", "properties": {}}\n'


@pytest.fixture(autouse=True)
def _default_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def _automate(tmp: Path, server: Server, *extra: str) -> tuple[int, dict[str, object]]:
    (tmp / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(server.port)))
    (tmp / "events.jsonl").write_text(EVENT)
    argv = [*automate_argv(tmp, responses=False), "--allow-host", "127.0.0.1", "--json", *extra]
    status, out = cli(*argv)
    return status, json.loads(out.splitlines()[0])


def test_without_the_ca_file_a_private_certificate_is_a_tls_error(
    tmp_path: Path, server: Server
) -> None:
    status, line = _automate(tmp_path, server)
    [delivery] = line["deliveries"]  # type: ignore[misc]
    assert status == 1 and delivery["outcome"] == "dead_lettered"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["error"]  # a tls_error: not retried
    assert delivery["attempts"] == 1
    assert server.received.requests == []


def test_with_the_ca_file_it_is_delivered_and_replay_takes_it_too(
    tmp_path: Path, server: Server, ca: trustme.CA
) -> None:
    status, _ = _automate(tmp_path, server)  # a dead letter first
    assert status == 1
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    status, out = cli(
        "replay", str(tmp_path / "store.db"), "--allow-host", "127.0.0.1", "--ca-file", str(pem)
    )
    assert (status, out) == (
        0,
        "replayed 1 records: delivered 1, dead-lettered again 0, skipped 0\n",
    )
    (tmp_path / "store.db").unlink()
    status, line = _automate(tmp_path, server, "--ca-file", str(other), "--ca-file", str(pem))
    assert status == 0
    assert [d["outcome"] for d in line["deliveries"]] == ["delivered"]  # type: ignore[attr-defined]
    assert len(server.received.requests) == 2
    assert len({r["headers"]["idempotency-key"] for r in server.received.requests}) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"not a certificate\n", "is unusable"),
        (b"\xff" * 64, "is unusable"),
    ],
    ids=["missing", "not-pem", "binary"],
)
def test_an_unusable_ca_file_exits_2_before_any_work(
    tmp_path: Path,
    server: Server,
    content: bytes | None,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem = tmp_path / "ca.pem"
    if content is not None:
        pem.write_bytes(content)
    (tmp_path / "wf.yaml").write_text(WORKFLOW.replace("{port}", str(server.port)))
    (tmp_path / "events.jsonl").write_text(EVENT)
    status, out = cli(*automate_argv(tmp_path, responses=False), "--ca-file", str(pem))
    err = capsys.readouterr().err
    assert (status, out) == (2, "")
    assert f"certificate authority file {pem}" in err and message in err
    assert "Traceback" not in err
    assert server.received.requests == [] and not (tmp_path / "store.db").exists()
