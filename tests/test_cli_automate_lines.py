"""The reading side of `flowlang automate --events`: DescriptorLines reads lines as BytesIO
does, from a descriptor, with any limit."""

from __future__ import annotations

import io
import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from flowlang.cli.event_stream import DescriptorLines


@given(
    st.lists(st.binary(max_size=300) | st.just(b"\n") | st.just(b"\r\n"), max_size=40),
    st.lists(st.integers(min_value=1, max_value=200) | st.just(-1), min_size=1, max_size=20),
    st.integers(min_value=1, max_value=64),
)
def test_readline_matches_bytesio(parts: list[bytes], limits: list[int], chunk: int) -> None:
    data = b"".join(parts)
    expected = io.BytesIO(data)
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        handle.seek(0)
        lines = DescriptorLines(os.dup(handle.fileno()))
        lines.CHUNK = chunk  # small reads: lines across many of them
        try:
            for step in range(len(data) + 2):
                limit = limits[step % len(limits)]
                got = lines.readline(limit)
                assert got == expected.readline(limit)
                if not got:
                    break
            assert lines.readline() == b""
        finally:
            lines.close()


def test_a_pipe_gives_a_line_as_soon_as_it_is_written() -> None:
    read_end, write_end = os.pipe()
    lines = DescriptorLines(read_end)
    try:
        os.write(write_end, b'{"id": "a"}\n{"id": ')
        assert lines.readline(100) == b'{"id": "a"}\n'  # the pipe stays open: no wait to fill
        os.write(write_end, b'"b"}\n')
        assert lines.readline(100) == b'{"id": "b"}\n'
        os.close(write_end)
        write_end = -1
        assert lines.readline(100) == b""
    finally:
        lines.close()
        if write_end >= 0:
            os.close(write_end)
