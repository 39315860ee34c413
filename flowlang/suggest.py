"""Suggest: the "did you mean" hint for a mistyped name, shared by every error that names one."""

from __future__ import annotations

__all__ = ["HintBudget", "did_you_mean"]

import difflib
from collections.abc import Iterable

#: Names longer than this get no hint (comparing two names costs the product of their lengths).
_MAX_NAME = 64
#: At most this many options are compared with the name (a document may have thousands).
_MAX_CANDIDATES = 256


def did_you_mean(name: object, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option (or one ``name`` begins), else ``""``.

    Only options of a comparable length are compared, at most ``_MAX_CANDIDATES`` of them, so
    one hint costs little however many options there are.
    """
    text = str(name)
    if len(text) > _MAX_NAME:
        return ""
    low, high = len(text) * 2 // 5, len(text) * 5 // 2 + 1
    choices: list[str] = []
    starting: list[str] = []
    for option in options:
        size = len(option)
        if size > _MAX_NAME:
            continue
        if low <= size <= high:
            choices.append(option)
        elif text and not starting and option.startswith(text):
            starting.append(option)
        if len(choices) >= _MAX_CANDIDATES:
            break
    close = difflib.get_close_matches(text, choices, n=1)
    if not close and text:
        close = [option for option in choices if option.startswith(text)][:1] or starting
    return f"; did you mean {close[0]!r}?" if close else ""


class HintBudget:
    """``did_you_mean`` for the first ``budget`` calls, then ``""``: a document with thousands
    of mistakes gets hints on the first ones only (each hint compares a name with many options).
    """

    __slots__ = ("left",)

    def __init__(self, budget: int) -> None:
        self.left = budget

    def __call__(self, name: object, options: Iterable[str]) -> str:
        if self.left <= 0:
            return ""
        self.left -= 1
        return did_you_mean(name, options)
