"""Host: the engine that owns the call; the runtime tells it what to do at call-control steps."""

from __future__ import annotations

__all__ = ["Host", "Instruction", "NullHost", "RecordingHost"]

from typing import Any, Protocol

Instruction = dict[str, Any]


class Host(Protocol):
    """Call control handed to the IVR engine. Every method may be a no-op for a given host.

    The host is given the real text (the caller must hear it); what a run records of it
    (``RunResult.instructions``, the trace) has every secret value the run used masked. A
    collect_input prompt reaches the engine only through ``RunResult.awaiting``, and is masked.
    """

    async def say(self, text: str, *, step: str) -> None:
        """Speak ``text`` to the caller."""

    async def play(self, url: str, *, step: str) -> None:
        """Play the audio at ``url``."""

    async def transfer(self, target: str, *, step: str) -> None:
        """Transfer the call to a queue, agent or number; the flow ends."""

    async def voicemail(self, mailbox: str, *, step: str) -> None:
        """Send the caller to voicemail; the flow ends."""

    async def hangup(self, *, step: str) -> None:
        """End the call; the flow ends."""


class NullHost:
    """The default host: does nothing (each RunResult lists the instructions of its run)."""

    async def say(self, text: str, *, step: str) -> None:
        pass

    async def play(self, url: str, *, step: str) -> None:
        pass

    async def transfer(self, target: str, *, step: str) -> None:
        pass

    async def voicemail(self, mailbox: str, *, step: str) -> None:
        pass

    async def hangup(self, *, step: str) -> None:
        pass


class RecordingHost:
    """A host that records every instruction it is given, across runs (tests, demos)."""

    def __init__(self) -> None:
        self.instructions: list[Instruction] = []

    async def say(self, text: str, *, step: str) -> None:
        self.instructions.append({"action": "say", "step": step, "text": text})

    async def play(self, url: str, *, step: str) -> None:
        self.instructions.append({"action": "play", "step": step, "url": url})

    async def transfer(self, target: str, *, step: str) -> None:
        self.instructions.append({"action": "transfer", "step": step, "target": target})

    async def voicemail(self, mailbox: str, *, step: str) -> None:
        self.instructions.append({"action": "voicemail", "step": step, "mailbox": mailbox})

    async def hangup(self, *, step: str) -> None:
        self.instructions.append({"action": "hangup", "step": step})
