"""TwiML: a run segment's result as the markup Twilio (or a TwiML-compatible provider) runs.

Every document is built with :mod:`xml.etree.ElementTree` and written through its own
escaping (in one pass, byte for byte what ``ET.tostring`` writes), so text from contact data
(a say step's text, a prompt) is escaped and can never add an element. Characters XML 1.0 cannot
carry (C0 controls other than tab, newline and carriage return; lone surrogates; U+FFFE and
U+FFFF) are removed, so the document always parses, and a ``<Say>`` is cut at
:data:`MAX_SAY` characters (Twilio's own limit for one Say). A Say or Play left with nothing
in it is left out (Twilio refuses an empty one). A failed run keeps what it said before it
failed, then apologises.

==========================================  ==================================================
instruction or status                       TwiML
==========================================  ==================================================
``say`` (text)                              ``<Say voice=… language=…>text</Say>``
``play`` (url)                              ``<Play>url</Play>``
``waiting_for_input`` (``awaiting``)        ``<Gather input="dtmf" action method numDigits
                                            finishOnKey timeout actionOnEmptyResult="true">``
                                            with ``<Say>`` prompt and ``<Play>`` prompt_url
``transfer`` (target)                       :func:`transfer_elements`: Enqueue or Dial
``voicemail`` (mailbox)                     ``<Record action maxLength playBeep finishOnKey
                                            recordingStatusCallback(…mailbox=…)>``
``hangup``; status ``completed``            ``<Hangup/>``
status ``failed``                           :func:`apology_twiml`'s verbs
==========================================  ==================================================
"""

from __future__ import annotations

__all__ = [
    "MAX_NAME",
    "MAX_SAY",
    "MAX_URL",
    "Links",
    "apology_twiml",
    "hangup_twiml",
    "transfer_elements",
    "twiml_for",
    "xml_text",
]

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from flowlang.runtime.results import RunResult
from flowlang.serve.settings import ServeSettings

#: The most characters one ``<Say>`` holds (Twilio's limit for one Say); longer text is cut.
MAX_SAY = 4096
#: The longest URL a ``<Play>`` may hold, and the longest voicemail mailbox name.
MAX_URL = 2048
#: The longest queue or client name, and the longest SIP URI, a transfer may name.
MAX_NAME = 128
_MAX_SIP = 512

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_KEYS = frozenset("0123456789*#")
#: Code points XML 1.0 cannot carry, mapped to None for str.translate.
_NOT_XML: dict[int, None] = dict.fromkeys(
    [
        *(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)),
        *range(0xD800, 0xE000),
        0xFFFE,
        0xFFFF,
    ]
)


@dataclass(frozen=True)
class Links:
    """The URLs a document sends Twilio back to (absolute, signed-over URLs the server made).

    ``gather``: the Gather action (carrying ``?seq=N``); ``transfer``: the action of Dial and
    Enqueue (Twilio reports DialCallStatus or QueueResult there); ``voicemail``: the Record
    action; ``recording``: the recordingStatusCallback (the mailbox is added to its query).
    """

    gather: str
    transfer: str
    voicemail: str
    recording: str


def xml_text(value: Any, limit: int = MAX_SAY) -> str:
    """``value`` as text XML 1.0 can carry: its first ``limit`` characters without the code
    points XML forbids (a non-str is shown with str())."""
    text = (value if type(value) is str else str(value))[:limit]
    # printable text holds none of them (they are all controls, surrogates or unassigned)
    return text if text.isprintable() else text.translate(_NOT_XML)


def _say(text: Any, settings: ServeSettings) -> list[ET.Element]:
    """``[<Say>]`` of the text XML can carry; ``[]`` when nothing is left to say (Twilio
    refuses an empty Say)."""
    said = xml_text(text)
    if not said.strip():
        return []
    element = ET.Element("Say")
    if settings.voice:
        element.set("voice", xml_text(settings.voice, MAX_NAME))
    if settings.language:
        element.set("language", xml_text(settings.language, MAX_NAME))
    element.text = said
    return [element]


def _play(url: Any) -> ET.Element | None:
    """``<Play>url</Play>``; None for an empty URL; ValueError for one over MAX_URL."""
    text = url if type(url) is str else str(url)
    if len(text) > MAX_URL:
        raise ValueError(f"a play URL is longer than {MAX_URL} characters")
    text = xml_text(text, MAX_URL).strip()
    if not text:
        return None
    element = ET.Element("Play")
    element.text = text
    return element


def _printable_name(name: str, what: str, target: str) -> str:
    if not name or len(name) > MAX_NAME or not name.isprintable() or name != name.strip():
        raise ValueError(
            f"transfer target {_shown(target)}: the {what} name must be 1 to {MAX_NAME} "
            f"printable characters"
        )
    return name


def _shown(target: str) -> str:
    return repr(xml_text(target, 80))


def _e164(number: str) -> bool:
    digits = number[1:]
    return (
        number.startswith("+")
        and 2 <= len(digits) <= 15
        and digits.isascii()
        and digits.isdigit()
        and digits[0] != "0"
    )


def transfer_elements(
    target: str, settings: ServeSettings, links: Links | None
) -> list[ET.Element]:
    """The verbs of a transfer to ``target``, first looked up in ``settings.transfer_targets``:
    ``queue:NAME`` -> ``<Enqueue>NAME</Enqueue>``; ``+E164`` -> ``<Dial><Number>``;
    ``sip:URI`` (or ``sips:``) -> ``<Dial><Sip>``; ``agent:NAME`` or ``client:NAME`` ->
    ``<Dial><Client>NAME</Client></Dial>``. Dial and Enqueue report to ``links.transfer``
    (no action without links). ValueError, naming the target, for anything else."""
    if type(target) is not str:
        raise ValueError(f"transfer target {target!r} is not text")
    dial = settings.transfer_targets.get(target, target)
    action = {"action": links.transfer, "method": "POST"} if links is not None else {}
    if dial.startswith("queue:"):
        enqueue = ET.Element("Enqueue", action)
        enqueue.text = _printable_name(dial[6:], "queue", target)
        return [enqueue]
    verb = ET.Element("Dial", action)
    if _e164(dial):
        ET.SubElement(verb, "Number").text = dial
    elif dial.startswith(("sip:", "sips:")):
        uri = dial
        if (
            len(uri) > _MAX_SIP
            or not uri.isascii()
            or not uri.isprintable()
            or any(c.isspace() for c in uri)
            or uri.endswith(":")
        ):
            raise ValueError(
                f"transfer target {_shown(target)}: a SIP URI is 5 to {_MAX_SIP} printable "
                f"ASCII characters without spaces"
            )
        ET.SubElement(verb, "Sip").text = uri
    elif dial.startswith(("agent:", "client:")):
        name = dial.partition(":")[2]
        ET.SubElement(verb, "Client").text = _printable_name(name, "client", target)
    else:
        raise ValueError(
            f"transfer target {_shown(target)} is not queue:NAME, +E.164, sip:URI, agent:NAME "
            f"or client:NAME (nor mapped in transfer_targets)"
        )
    return [verb]


def _with_query(url: str, name: str, value: str) -> str:
    """``url`` with ``name=value`` added to its query (percent-encoded), before any fragment."""
    parts = urlsplit(url)
    added = urlencode({name: value})
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))


def _record(mailbox: Any, settings: ServeSettings, links: Links) -> ET.Element:
    text = mailbox if type(mailbox) is str else str(mailbox)
    if len(text) > MAX_URL:
        raise ValueError(f"a voicemail mailbox name is longer than {MAX_URL} characters")
    return ET.Element(
        "Record",
        {
            "action": links.voicemail,
            "method": "POST",
            "maxLength": str(settings.voicemail_max_length),
            "playBeep": "true",
            "finishOnKey": "#",
            "recordingStatusCallback": _with_query(links.recording, "mailbox", xml_text(text)),
            "recordingStatusCallbackMethod": "POST",
        },
    )


def _count(awaiting: Mapping[str, Any], name: str) -> str:
    value = awaiting.get(name)
    if type(value) is not int or not 1 <= value <= 1000:
        raise ValueError(f"awaiting.{name} must be a whole number from 1, not {value!r}")
    return str(value)


def _gather(awaiting: Any, settings: ServeSettings, links: Links) -> ET.Element:
    if not isinstance(awaiting, Mapping):
        raise ValueError("a run waiting for input has no awaiting description")
    key = awaiting.get("finish_on_key", "#")
    if type(key) is not str or len(key) > 1 or (key and key not in _KEYS):
        raise ValueError(f"awaiting.finish_on_key must be one of 0-9 * # or empty, not {key!r}")
    timeout = awaiting.get("timeout", 5)
    if type(timeout) not in (int, float) or not math.isfinite(timeout):
        raise ValueError(f"awaiting.timeout must be seconds, not {timeout!r}")
    gather = ET.Element(
        "Gather",
        {
            "input": "dtmf",
            "action": links.gather,
            "method": "POST",
            "numDigits": _count(awaiting, "max_digits"),
            "finishOnKey": key,
            "timeout": str(max(1, math.ceil(timeout))),
            "actionOnEmptyResult": "true",
        },
    )
    gather.extend(_say(awaiting.get("prompt") or "", settings))
    url = awaiting.get("prompt_url")
    if url:
        play = _play(url)
        if play is not None:
            gather.append(play)
    return gather


#: ElementTree's own escaping of text and of attribute values (what ``ET.tostring`` writes
#: with); without them (another Python), documents are written by ``ET.tostring`` itself.
_ESCAPE_TEXT: Callable[[str], str] | None = getattr(ET, "_escape_cdata", None)
_ESCAPE_ATTRIBUTE: Callable[[str], str] | None = getattr(ET, "_escape_attrib", None)


class _NotPlainError(Exception):
    """An element :func:`_write` does not write (ElementTree writes it instead)."""


def _write(
    element: ET.Element,
    out: list[str],
    text: Callable[[str], str],
    attribute: Callable[[str], str],
) -> None:
    """``element`` as ``ET.tostring(element, encoding="unicode")`` writes it, through
    ElementTree's escaping, for the elements this module makes: text tags and attribute
    names without namespaces, text values, no tails (_NotPlainError for anything else)."""
    tag = element.tag
    if type(tag) is not str or "{" in tag or element.tail:
        raise _NotPlainError
    out.append("<" + tag)
    for name, value in element.items():
        if type(name) is not str or "{" in name or type(value) is not str:
            raise _NotPlainError
        out.append(f' {name}="{attribute(value)}"')
    body = element.text
    if body is not None and type(body) is not str:
        raise _NotPlainError
    if body or len(element):
        out.append(">")
        if body:
            out.append(text(body))
        for child in element:
            _write(child, out, text, attribute)
        out.append(f"</{tag}>")
    else:
        out.append(" />")


def _document(children: list[ET.Element]) -> str:
    response = ET.Element("Response")
    response.extend(children)
    text, attribute = _ESCAPE_TEXT, _ESCAPE_ATTRIBUTE
    if text is not None and attribute is not None:
        out = [_DECLARATION]
        try:
            _write(response, out, text, attribute)
            return "".join(out)
        except _NotPlainError:
            pass
    return _DECLARATION + ET.tostring(response, encoding="unicode")


def _apology_elements(settings: ServeSettings, links: Links | None) -> list[ET.Element]:
    verbs = _say(settings.apology, settings)
    if settings.fallback_target is not None:
        try:
            return [*verbs, *transfer_elements(settings.fallback_target, settings, links)]
        except ValueError:
            pass  # a fallback that cannot be dialled: the apology still ends the call cleanly
    return [*verbs, ET.Element("Hangup")]


def apology_twiml(settings: ServeSettings, links: Links | None) -> str:
    """``<Say>`` of ``settings.apology``, then a transfer to ``settings.fallback_target``
    (without action when ``links`` is None) or, with no target or one that cannot be dialled,
    ``<Hangup/>``. Never raises."""
    return _document(_apology_elements(settings, links))


def hangup_twiml() -> str:
    """A document that ends the call: ``<Response><Hangup /></Response>``."""
    return _document([ET.Element("Hangup")])


def twiml_for(result: RunResult, links: Links, settings: ServeSettings) -> str:
    """The document for one run segment: every ``say`` and ``play`` in order, then what the
    run stopped on (a Gather while it waits; the transfer, voicemail or hangup it ended with;
    a Hangup when it completed; the apology when it failed).

    ValueError (the server answers :func:`apology_twiml` instead) for a transfer target no
    rule accepts, an over-long play URL or mailbox, or a result of an unknown shape.
    """
    verbs: list[ET.Element] = []
    final: dict[str, Any] | None = None
    for instruction in result.instructions:
        action = instruction.get("action")
        if action == "say":
            verbs += _say(instruction.get("text", ""), settings)
        elif action == "play":
            play = _play(instruction.get("url", ""))
            if play is not None:
                verbs.append(play)
        elif action in ("transfer", "voicemail", "hangup"):
            final = instruction
            break  # the call leaves the flow: nothing after it is reached
        else:
            raise ValueError(f"no TwiML for the instruction {xml_text(action, 40)!r}")
    status = result.status
    if status == "failed":
        verbs += _apology_elements(settings, links)
    elif final is not None and final["action"] == "transfer":
        verbs += transfer_elements(final.get("target", ""), settings, links)
    elif final is not None and final["action"] == "voicemail":
        verbs.append(_record(final.get("mailbox", ""), settings, links))
    elif status == "waiting_for_input":
        verbs.append(_gather(result.awaiting, settings, links))
    elif status in ("ended", "completed"):
        verbs.append(ET.Element("Hangup"))
    else:
        raise ValueError(f"no TwiML for a run whose status is {xml_text(status, 40)!r}")
    return _document(verbs)
