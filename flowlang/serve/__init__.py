"""flowlang serve: answer TwiML voice webhooks and receive signed automation events.

The pieces, one stage each: :mod:`~flowlang.serve.settings` (what a deployment configures),
:mod:`~flowlang.serve.signatures` (Twilio's and Standard Webhooks' signatures),
:mod:`~flowlang.serve.twiml` (run results as TwiML), :mod:`~flowlang.serve.calls` (where a
waiting call's state lives: this process, or Redis in :mod:`~flowlang.serve.redis_store`),
:mod:`~flowlang.serve.voice` (one webhook: start or resume a run), :mod:`~flowlang.serve.intake`
(events recorded, then dispatched) and :mod:`~flowlang.serve.app` (the Starlette routes).
Starlette and uvicorn come with the ``serve`` extra: ``pip install 'flowlang[serve]'``.
"""

from __future__ import annotations
