"""Audio: tell a recording's encoding, sample rate, channels and duration from its header.

Only headers are read (never decoded audio), from bytes already fetched and bounded; every
number a header holds is checked before use, and a header that lies about its size cannot make
anything larger: durations come from the bytes actually present. The encodings are those of
Google Speech-to-Text v1 (``RecognitionConfig.AudioEncoding``).
"""

from __future__ import annotations

__all__ = ["ENCODINGS", "AudioError", "AudioFacts", "describe_audio"]

import struct
from dataclasses import dataclass

from flowlang.errors import AudioError

#: Encodings a workflow may name (Google v1; MP3 only through v1p1beta1 or a newer endpoint).
ENCODINGS = (
    "LINEAR16",
    "FLAC",
    "MULAW",
    "AMR",
    "AMR_WB",
    "OGG_OPUS",
    "SPEEX_WITH_HEADER_BYTE",
    "WEBM_OPUS",
    "MP3",
)
#: sampleRateHertz Google accepts (8000-48000; Opus only these five).
MIN_RATE, MAX_RATE = 8000, 48000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
#: WAV format codes: PCM, mu-law, and WAVE_FORMAT_EXTENSIBLE (the real code in its sub-format).
_WAV_PCM, _WAV_MULAW, _WAV_EXTENSIBLE = 1, 7, 0xFFFE
#: At most this many RIFF chunks are looked at before giving up on finding fmt and data.
_MAX_CHUNKS = 64
#: A WAV data size that means "unknown" (written by recorders that stream).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class AudioFacts:
    """What Google needs to know about a recording; duration in seconds when the header says."""

    encoding: str
    sample_rate: int | None
    channels: int = 1
    duration: float | None = None


def _check_rate(rate: int, encoding: str) -> int:
    if encoding == "OGG_OPUS" and rate not in OPUS_RATES:
        raise AudioError(
            f"the recording's sample rate {rate} Hz is not one Google takes for OGG_OPUS "
            f"({', '.join(map(str, OPUS_RATES))}); give the action's sample_rate"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(
            f"the recording's sample rate {rate} Hz is outside the {MIN_RATE}-{MAX_RATE} Hz "
            "Google takes (sampleRateHertz)"
        )
    return rate


def _wav(data: bytes) -> AudioFacts:
    """RIFF/WAVE: the fmt chunk gives the encoding and rate; the data chunk the duration."""
    fmt: tuple[int, int, int, int, int, int] | None = None
    position = 12
    for _ in range(_MAX_CHUNKS):
        if position + 8 > len(data):
            break
        chunk_id, size = (
            data[position : position + 4],
            struct.unpack_from("<I", data, position + 4)[0],
        )
        body = position + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioError("the WAV fmt header is cut short")
            code, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", data, body)
            if code == _WAV_EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                code = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (code, channels, rate, byte_rate, align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError("the WAV data comes before its fmt header")
            available = len(data) - body
            present = available if size in _UNKNOWN_SIZES else min(size, available)
            return _wav_facts(fmt, present)
        position = body + size + (size & 1)  # chunks are padded to an even size
    raise AudioError("the WAV file has no fmt and data chunks")


def _wav_facts(fmt: tuple[int, int, int, int, int, int], present: int) -> AudioFacts:
    code, channels, rate, byte_rate, align, bits = fmt
    if code == _WAV_PCM and bits == 16:
        encoding = "LINEAR16"
    elif code == _WAV_MULAW and bits == 8:
        encoding = "MULAW"
    else:
        raise AudioError(
            f"the WAV audio is format {code} with {bits}-bit samples; Google reads 16-bit PCM "
            "(LINEAR16) or 8-bit mu-law (MULAW) in WAV: give the action's encoding"
        )
    if not 1 <= channels <= 8:
        raise AudioError(f"the WAV header gives {channels} channels; Google takes 1 to 8")
    if align != channels * bits // 8 or byte_rate != rate * align:
        raise AudioError(
            "the WAV header is inconsistent (its byte rate and block size do not follow from "
            "its sample rate, channels and sample size)"
        )
    _check_rate(rate, encoding)
    return AudioFacts(encoding, rate, channels, present / byte_rate)


def _flac(data: bytes) -> AudioFacts:
    """fLaC: the STREAMINFO block (always first) gives rate, channels, sample size and length."""
    if len(data) < 8 + 34 or data[4] & 0x7F != 0:
        raise AudioError("the FLAC file does not start with its STREAMINFO block")
    info = int.from_bytes(data[8 + 10 : 8 + 18], "big")  # rate 20, channels 3, bits 5, samples 36
    rate = info >> 44
    channels = ((info >> 41) & 0x7) + 1
    bits = ((info >> 36) & 0x1F) + 1
    samples = info & 0xFFFFFFFFF
    if bits not in (16, 24):
        raise AudioError(f"the FLAC audio has {bits}-bit samples; Google takes 16 or 24")
    _check_rate(rate, "FLAC")
    return AudioFacts("FLAC", rate, channels, samples / rate if samples else None)


def _ogg_opus(data: bytes) -> AudioFacts:
    """Ogg with an OpusHead: 48 kHz granules; the last page's granule position is the length."""
    head = data.find(b"OpusHead", 0, 512)
    if head < 0 or head + 19 > len(data):
        raise AudioError("the Ogg file holds no Opus stream; give the action's encoding")
    channels = data[head + 9]
    pre_skip, input_rate = struct.unpack_from("<HI", data, head + 10)
    rate = input_rate if input_rate in OPUS_RATES else 48000
    last = data.rfind(b"OggS", max(0, len(data) - 65_307))  # a page is at most 65,307 bytes
    duration = None
    if last >= 0 and last + 14 <= len(data):
        granule = struct.unpack_from("<q", data, last + 6)[0]
        if granule > pre_skip:
            duration = (granule - pre_skip) / 48000
    if not 1 <= channels <= 8:
        raise AudioError(f"the Opus header gives {channels} channels; Google takes 1 to 8")
    return AudioFacts("OGG_OPUS", rate, channels, duration)


def _looks_like_mp3(data: bytes) -> bool:
    return data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def describe_audio(
    data: bytes, encoding: str | None = None, sample_rate: int | None = None
) -> AudioFacts:
    """The facts of ``data``: from its header, or from the action's ``encoding`` and
    ``sample_rate`` when given (they win). AudioError when they cannot be told."""
    facts: AudioFacts | None = None
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        facts = _wav(data)
    elif data[:4] == b"fLaC":
        facts = _flac(data)
    elif data[:4] == b"OggS":
        facts = _ogg_opus(data) if encoding in (None, "OGG_OPUS") else None
    elif data[:9] == b"#!AMR-WB\n":
        facts = AudioFacts("AMR_WB", 16000)
    elif data[:6] == b"#!AMR\n":
        facts = AudioFacts("AMR", 8000)
    header = data[:4] in (b"RIFF", b"fLaC") and facts is not None
    if header and facts is not None:  # Google refuses a config that contradicts the header
        if encoding is not None and encoding != facts.encoding:
            raise AudioError(
                f"encoding {encoding} does not match the recording's header ({facts.encoding})"
            )
        if sample_rate is not None and sample_rate != facts.sample_rate:
            raise AudioError(
                f"sample_rate {sample_rate} does not match the recording's header "
                f"({facts.sample_rate} Hz)"
            )
    if encoding is not None:
        rate = sample_rate or (facts.sample_rate if facts is not None else None)
        if rate is None:
            raise AudioError(f"encoding {encoding} needs the action's sample_rate")
        channels = facts.channels if facts is not None else 1
        duration = facts.duration if facts is not None else None
        return AudioFacts(encoding, _check_rate(rate, encoding), channels, duration)
    if facts is None:
        if _looks_like_mp3(data):
            raise AudioError(
                "the recording is MP3, which Google Speech v1 does not read (v1p1beta1 does): "
                "give the action's encoding (MP3) with a speech endpoint that takes it"
            )
        raise AudioError(
            "the recording is not audio flowlang can tell (WAV, FLAC, Ogg Opus, AMR): give "
            "the action's encoding and sample_rate"
        )
    if sample_rate is not None:
        return AudioFacts(
            facts.encoding, _check_rate(sample_rate, facts.encoding), facts.channels, facts.duration
        )
    return facts
