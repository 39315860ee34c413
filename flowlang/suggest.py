"""Suggest: the "did you mean" hint for a mistyped name, shared by every error that names one."""

from __future__ import annotations

__all__ = ["did_you_mean"]

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option (or one ``name`` begins), else ``""``."""
    text = str(name)
    choices = list(options)
    close = difflib.get_close_matches(text, choices, n=1)
    if not close and text:
        close = [option for option in choices if option.startswith(text)][:1]
    return f"; did you mean {close[0]!r}?" if close else ""
