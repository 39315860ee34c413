"""Reading a recording's header: encodings, rates and lengths Google needs; hostile headers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import flac_silence, wav_bytes

from flowlang.automations.audio import AudioError, AudioFacts, describe_audio


def wav_header(
    code: int, channels: int, rate: int, bits: int, data: bytes, extra: bytes = b""
) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", code, channels, rate, rate * align, align, bits) + extra
    chunks = (
        b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def ogg_page(granule: int, payload: bytes) -> bytes:
    return (
        b"OggS"
        + bytes([0, 0])
        + struct.pack("<q", granule)
        + bytes(12)
        + bytes([1, len(payload)])
        + payload
    )


@pytest.mark.parametrize(
    ("audio", "expected"),
    [
        (wav_bytes(2.5), AudioFacts("LINEAR16", 8000, 1, 2.5)),
        (wav_bytes(1, rate=44100, channels=2), AudioFacts("LINEAR16", 44100, 2, 1.0)),
        (wav_header(7, 1, 8000, 8, bytes(4000)), AudioFacts("MULAW", 8000, 1, 0.5)),
        (
            wav_header(0xFFFE, 1, 16000, 16, bytes(32000), struct.pack("<HHIH", 22, 16, 4, 1) + bytes(14)),
            AudioFacts("LINEAR16", 16000, 1, 1.0),
        ),
        (flac_silence(75, rate=16000), AudioFacts("FLAC", 16000, 1, 75.0)),
        (
            ogg_page(0, b"OpusHead" + bytes([1, 1]) + struct.pack("<HI", 312, 16000) + bytes(3))
            + ogg_page(48000 * 90 + 312, b"x"),
            AudioFacts("OGG_OPUS", 16000, 1, 90.0),
        ),
        (b"#!AMR\n" + bytes(10), AudioFacts("AMR", 8000)),
        (b"#!AMR-WB\n" + bytes(10), AudioFacts("AMR_WB", 16000)),
    ],
    ids=["wav", "wav-stereo-44k", "wav-mulaw", "wav-extensible", "flac", "ogg-opus", "amr", "amr-wb"],
)  # fmt: skip
def test_headers_give_what_google_needs(audio: bytes, expected: AudioFacts) -> None:
    assert describe_audio(audio) == expected


@pytest.mark.parametrize(
    ("audio", "encoding", "rate", "expected"),
    [
        (wav_header(1, 1, 8000, 8, bytes(10)), None, None, "8-bit samples"),
        (wav_header(3, 1, 8000, 32, bytes(10)), None, None, "format 3"),
        (wav_header(1, 9, 8000, 16, bytes(10)), None, None, "9 channels"),
        (b"RIFF\x00\x00\x00\x00WAVEdata\x04\x00\x00\x00abcd", None, None, "before its fmt"),
        (b"RIFF\x00\x00\x00\x00WAVE" + b"junk\x00\x00\x00\x00" * 100, None, None, "no fmt and data"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", None, None, "cut short"),
        (wav_bytes(1), "FLAC", None, "does not match the recording's header (LINEAR16)"),
        (wav_bytes(1), None, 16000, "does not match the recording's header (8000 Hz)"),
        (b"fLaC" + bytes(10), None, None, "STREAMINFO"),
        (b"OggS" + bytes(40), None, None, "no Opus stream"),
        (b"\xff\xfb\x90\x00" + bytes(100), None, None, "MP3"),
        (b"hello", None, None, "give the action's encoding and sample_rate"),
        (b"hello", "LINEAR16", None, "needs the action's sample_rate"),
        (b"hello", "OGG_OPUS", 44100, "OGG_OPUS"),
    ],
)  # fmt: skip
def test_what_cannot_be_sent_as_it_is_says_which_field_would_fix_it(
    audio: bytes, encoding: str | None, rate: int | None, expected: str
) -> None:
    with pytest.raises(AudioError) as raised:
        describe_audio(audio, encoding, rate)
    assert expected in str(raised.value)


def test_a_streamed_wav_with_an_unknown_size_is_measured_by_its_bytes() -> None:
    audio = bytearray(wav_bytes(3))
    at = audio.index(b"data") + 4
    audio[at : at + 4] = b"\xff\xff\xff\xff"
    assert describe_audio(bytes(audio)).duration == 3.0


_MAGIC = st.sampled_from([b"", b"RIFF\x10\x00\x00\x00WAVE", b"fLaC", b"OggS", b"#!AMR\n", b"ID3"])


@given(
    magic=_MAGIC,
    rest=st.binary(max_size=300),
    encoding=st.sampled_from([None, "LINEAR16", "FLAC", "OGG_OPUS", "MULAW"]),
    rate=st.one_of(st.none(), st.integers(8000, 48000)),
)
def test_any_bytes_give_facts_or_a_clear_error(
    magic: bytes, rest: bytes, encoding: str | None, rate: int | None
) -> None:
    try:
        facts = describe_audio(magic + rest, encoding, rate)
    except AudioError as error:
        assert str(error) and "Error" not in str(error)
        return
    assert 8000 <= (facts.sample_rate or 0) <= 48000 and 1 <= facts.channels <= 8
    assert facts.duration is None or facts.duration >= 0
