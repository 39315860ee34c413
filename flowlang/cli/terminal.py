"""What the command line writes to a terminal: outside text made safe to print, and colour.

Text from callers, servers and events reaches the terminal. :func:`printable` writes the
characters a terminal acts on as escapes, so that such text cannot move the cursor, retitle the
window, reorder what is shown (bidirectional overrides and isolates) or stop the output (lone
surrogates, which no encoding can write). :class:`Colours` paints roles (errors, carets,
outcomes) only on a terminal, and never when ``NO_COLOR`` is set or ``TERM`` is ``dumb``
(https://no-color.org); ``FORCE_COLOR`` turns it on when output is piped.
"""

from __future__ import annotations

__all__ = ["Colours", "printable"]

import os
from collections.abc import Mapping
from typing import TextIO


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE_CODES = (
    *range(0x00, 0x09),
    *range(0x0B, 0x20),
    *range(0x7F, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    *range(0xD800, 0xE000),
)
#: Escapes for everything a terminal acts on but tab and newline.
_KEEP_LINES = {code: _escape(code) for code in _UNSAFE_CODES}
#: The same, with newline escaped too: the text stays on one line.
_ONE_LINE = {**_KEEP_LINES, 0x0A: "\\x0a"}


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` safe to write to a terminal: control characters other than tab (and newline,
    unless ``one_line``), bidirectional controls and lone surrogates written as escapes
    (``\\x1b``, ``\\u202e``, ``\\ud800``)."""
    return text.translate(_ONE_LINE if one_line else _KEEP_LINES)


#: SGR codes per role: what the text means, not how it looks.
_ROLES = {
    "error": "1;31",
    "warning": "1;33",
    "caret": "1;31",
    "good": "32",
    "bad": "31",
    "muted": "2",
    "strong": "1",
}


class Colours:
    """Paints text by role when colour is on (see the module's rules); else returns it as is."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Colours:
        """Colour for ``stream``: on for a terminal unless NO_COLOR (any value but empty) or
        TERM=dumb; FORCE_COLOR (any value but empty) turns it on anyway, NO_COLOR wins."""
        env = os.environ if environ is None else environ
        if env.get("NO_COLOR"):
            return cls(False)
        if env.get("FORCE_COLOR"):
            return cls(True)
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):  # a closed or bare stream
            terminal = False
        return cls(terminal and env.get("TERM") != "dumb")

    def paint(self, text: str, role: str) -> str:
        """``text`` in the colour of ``role`` (a key of the role table), or plain."""
        if not self.enabled or not text:
            return text
        return f"\x1b[{_ROLES[role]}m{text}\x1b[0m"
