"""flowlang.serve.twiml: run results as TwiML.

Golden files (tests/golden/twiml/<case>.xml) hold the exact document of each case, built from
a real run of a small flow where one exists (a failed run is built directly); every document
parses. Hostile text (markup, CDATA ends, SSML, control characters, lone surrogates, a
megabyte) never adds an element and comes back as the text it was, less the characters XML
cannot carry.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from flowlang import load_flow_text, run_sync
from flowlang.runtime.results import RunResult
from flowlang.serve.settings import ServeSettings
from flowlang.serve.twiml import (
    MAX_NAME,
    MAX_SAY,
    MAX_URL,
    Links,
    apology_twiml,
    hangup_twiml,
    transfer_elements,
    twiml_for,
    xml_text,
)

GOLDEN = Path(__file__).parent / "golden" / "twiml"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
LINKS = Links(
    gather="https://ivr.example.com/voice/main?seq=2",
    transfer="https://ivr.example.com/voice/main/transfer?seq=2",
    voicemail="https://ivr.example.com/voice/main/voicemail?seq=2",
    recording="https://ivr.example.com/twilio/recording?call=CA0001",
)


def _settings(**changes: Any) -> ServeSettings:
    return ServeSettings(
        public_url="https://ivr.example.com", twilio_keys=("TWILIO_TOKEN",), **changes
    )


def _flow(steps: str) -> str:
    return f"flow: t\nstart: a\nsteps:\n{steps}"


@dataclass
class Case:
    """A flow run (with context and digits), or a result built by hand; the settings' changes."""

    flow: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    digits: list[str | None] = field(default_factory=list)
    result: RunResult | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def run(self) -> RunResult:
        if self.result is not None:
            return self.result
        assert self.flow is not None
        return run_sync(load_flow_text(self.flow), self.context, digits=self.digits)


SAY_AND_COLLECT = _flow(
    """\
  a: {type: say, text: "Welcome to Acme, <<contact.first_name>>.", next: ask}
  ask:
    type: collect_input
    prompt: Please enter your 8-digit account number, then press hash.
    max_digits: 8
    min_digits: 8
    timeout: 2.5s
    next: done
    on_no_input: done
  done: {type: hangup}
"""
)
MENU_PLAY = _flow(
    """\
  a:
    type: menu
    play: https://media.example.com/acme/menu.mp3
    options: {"1": sales}
    invalid_message: That is not an option.
    fallback: sales
  sales: {type: transfer, target: "queue:sales"}
"""
)


def _ending(step: str) -> str:
    return _flow(f'  a: {{type: say, text: "One moment, please.", next: b}}\n  b: {step}\n')


FAILED = RunResult(
    "failed",
    [],
    [{"action": "say", "step": "a", "text": "Let me look that up."}],
    error="step 'lookup': HTTP 500",
)

CASES: dict[str, Case] = {
    "say_then_gather": Case(SAY_AND_COLLECT, {"contact": {"first_name": "Jana"}}),
    "gather_without_prompt": Case(
        _flow(
            "  a: {type: collect_input, finish_on_key: '', timeout: 0.5s, next: b, "
            "on_no_input: b}\n  b: {type: hangup}\n"
        )
    ),
    "menu_say": Case(
        _flow(
            "  a: {type: menu, say: For sales press 1., timeout: 6s, options: {'1': b}, "
            "fallback: b}\n  b: {type: hangup}\n"
        )
    ),
    "menu_with_play": Case(MENU_PLAY),
    "menu_retry_with_play": Case(MENU_PLAY, digits=["7"]),
    "transfer_queue": Case(_ending('{type: transfer, target: "queue:billing"}')),
    "transfer_number": Case(_ending('{type: transfer, target: "+14155550100"}')),
    "transfer_sip": Case(
        _ending('{type: transfer, target: "sip:alice@pbx.example.com;transport=tls"}')
    ),
    "transfer_agent": Case(_ending('{type: transfer, target: "agent:alice"}')),
    "transfer_client": Case(_ending('{type: transfer, target: "client:bob_42"}')),
    "transfer_mapped": Case(
        _ending('{type: transfer, target: "queue:billing"}'),
        settings={"transfer_targets": {"queue:billing": "+14155550123"}},
    ),
    "transfer_mapped_to_sip": Case(
        _ending('{type: transfer, target: "agent:sales"}'),
        settings={"transfer_targets": {"agent:sales": "sip:sales@pbx.example.com"}},
    ),
    "voicemail": Case(
        _ending('{type: voicemail, mailbox: "sales & support"}'),
        settings={"voicemail_max_length": 90},
    ),
    "hangup": Case(_ending("{type: hangup}")),
    "completed": Case(_flow('  a: {type: say, text: "Goodbye."}\n')),
    "play_then_completed": Case(
        _flow("  a: {type: play, url: 'https://media.example.com/bye.mp3?v=1&lang=en'}\n")
    ),
    "failed_with_fallback": Case(result=FAILED, settings={"fallback_target": "queue:operators"}),
    "failed_hangup": Case(result=FAILED, settings={"apology": "We are sorry & will call back."}),
    "voice_and_language": Case(
        SAY_AND_COLLECT,
        {"contact": {"first_name": "Jana"}},
        settings={"voice": "Polly.Joanna", "language": "en-US"},
    ),
    "hostile_say": Case(
        _ending("{type: hangup}").replace('"One moment, please."', '"<<contact.note>>"'),
        {"contact": {"note": 'a < b & c ]]> <Hangup/> <speak><break time="3s"/></speak> \x07'}},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    case = CASES[name]
    document = twiml_for(case.run(), LINKS, _settings(**case.settings))
    assert document.startswith(DECLARATION)
    root = ET.fromstring(document.encode("utf-8"))
    assert root.tag == "Response" and len(root) >= 1
    assert document + "\n" == (GOLDEN / f"{name}.xml").read_text(encoding="utf-8")


def test_every_golden_file_has_a_case() -> None:
    assert sorted(path.stem for path in GOLDEN.glob("*.xml")) == sorted(CASES)


def _tags(document: str) -> list[str]:
    root = ET.fromstring(document.encode("utf-8"))
    assert root.tag == "Response"
    return [element.tag for element in root.iter()]


def test_gather_attributes_follow_awaiting() -> None:
    root = ET.fromstring(twiml_for(CASES["say_then_gather"].run(), LINKS, _settings()))
    gather = root.find("Gather")
    assert gather is not None
    assert gather.attrib == {
        "input": "dtmf",
        "action": LINKS.gather,
        "method": "POST",
        "numDigits": "8",
        "finishOnKey": "#",
        "timeout": "3",  # 2.5 s rounded up
        "actionOnEmptyResult": "true",
    }
    assert [child.tag for child in gather] == ["Say"]


def test_menu_retry_says_the_message_then_plays() -> None:
    root = ET.fromstring(twiml_for(CASES["menu_retry_with_play"].run(), LINKS, _settings()))
    gather = root.find("Gather")
    assert gather is not None
    assert [(child.tag, child.text) for child in gather] == [
        ("Say", "That is not an option."),
        ("Play", "https://media.example.com/acme/menu.mp3"),
    ]
    assert gather.get("numDigits") == "1" and gather.get("finishOnKey") == ""


def test_voicemail_callback_carries_the_mailbox() -> None:
    root = ET.fromstring(twiml_for(CASES["voicemail"].run(), LINKS, _settings()))
    record = root.find("Record")
    assert record is not None
    callback = urlsplit(record.get("recordingStatusCallback", ""))
    assert parse_qsl(callback.query) == [("call", "CA0001"), ("mailbox", "sales & support")]
    assert callback.netloc == "ivr.example.com" and callback.path == "/twilio/recording"


def test_recording_link_keeps_its_fragment() -> None:
    links = Links("g", "t", "v", "https://ivr.example.com/twilio/recording#rc=2&rt=5")
    result = RunResult("ended", [], [{"action": "voicemail", "step": "v", "mailbox": "a/b?c#d"}])
    record = ET.fromstring(twiml_for(result, links, _settings())).find("Record")
    assert record is not None
    callback = urlsplit(record.get("recordingStatusCallback", ""))
    assert callback.fragment == "rc=2&rt=5"
    assert parse_qsl(callback.query) == [("mailbox", "a/b?c#d")]


def test_apology_without_links_and_with_an_undiallable_fallback() -> None:
    assert _tags(apology_twiml(_settings(), None)) == ["Response", "Say", "Hangup"]
    root = ET.fromstring(apology_twiml(_settings(fallback_target="+14155550100"), None))
    dial = root.find("Dial")
    assert dial is not None and dial.attrib == {}  # no links: no action
    broken = _settings(fallback_target="nowhere")
    assert _tags(apology_twiml(broken, LINKS)) == ["Response", "Say", "Hangup"]
    assert _tags(hangup_twiml()) == ["Response", "Hangup"]
    assert hangup_twiml() == DECLARATION + "<Response><Hangup /></Response>"


@pytest.mark.parametrize(
    "target",
    [
        "",
        "nowhere",
        "queue:",
        "queue:" + "q" * (MAX_NAME + 1),
        "queue:a\nb",
        "queue: padded",
        "queue:\ud800",
        "+",
        "+1",
        "+0123456789",
        "+1234567890123456",
        "+1415555O100",
        "+１４１５５５５０１００",
        "14155550100",
        "tel:+14155550100",
        "sip:",
        "sip:a b@example.com",
        "sip:ä@example.com",
        "sip:" + "a" * 600,
        "agent:",
        "client:\x00",
        "client:" + "c" * (MAX_NAME + 1),
    ],
)
def test_transfer_targets_refused(target: str) -> None:
    with pytest.raises(ValueError, match="transfer target") as caught:
        transfer_elements(target, _settings(), LINKS)
    assert "\ud800" not in str(caught.value) and "\x00" not in str(caught.value)
    result = RunResult("ended", [], [{"action": "transfer", "step": "t", "target": target}])
    with pytest.raises(ValueError, match="transfer target"):
        twiml_for(result, LINKS, _settings())


def test_mapped_target_is_checked_and_named_by_the_flow_target() -> None:
    settings = _settings(transfer_targets={"agent:sales": "tel:123"})
    with pytest.raises(ValueError, match="'agent:sales'"):
        transfer_elements("agent:sales", settings, LINKS)


@pytest.mark.parametrize(
    ("target", "tag", "text"),
    [
        ("+12", "Number", "+12"),
        ("+123456789012345", "Number", "+123456789012345"),
        ("queue:<Hangup/>", "Enqueue", "<Hangup/>"),
        ("client:a&b", "Client", "a&b"),
        ("sips:bob@example.com", "Sip", "sips:bob@example.com"),
    ],
)
def test_transfer_edges_and_markup_in_names(target: str, tag: str, text: str) -> None:
    result = RunResult("ended", [], [{"action": "transfer", "step": "t", "target": target}])
    root = ET.fromstring(twiml_for(result, LINKS, _settings()))
    found = list(root.iter(tag))
    assert len(found) == 1 and found[0].text == text
    assert not list(root.iter("Hangup"))


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (RunResult("weird", [], []), "status"),
        (RunResult("completed", [], [{"action": "dance", "step": "x"}]), "instruction"),
        (RunResult("waiting_for_input", [], [], awaiting=None), "awaiting"),
        (
            RunResult("waiting_for_input", [], [], awaiting={"max_digits": 0, "timeout": 5}),
            "max_digits",
        ),
        (
            RunResult(
                "waiting_for_input",
                [],
                [],
                awaiting={"max_digits": 4, "finish_on_key": "<", "timeout": 5},
            ),
            "finish_on_key",
        ),
        (
            RunResult(
                "waiting_for_input", [], [], awaiting={"max_digits": 4, "timeout": float("nan")}
            ),
            "timeout",
        ),
        (
            RunResult(
                "completed", [], [{"action": "play", "step": "p", "url": "u" * (MAX_URL + 1)}]
            ),
            "play URL",
        ),
        (
            RunResult(
                "ended", [], [{"action": "voicemail", "step": "v", "mailbox": "m" * (MAX_URL + 1)}]
            ),
            "mailbox",
        ),
    ],
)
def test_results_without_twiml_are_value_errors(result: RunResult, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        twiml_for(result, LINKS, _settings())


def test_empty_play_and_say_are_left_out() -> None:
    """Twilio refuses an empty Say or Play: nothing left to say or play is no verb."""
    result = RunResult(
        "completed",
        [],
        [
            {"action": "play", "step": "p", "url": " \x00 "},
            {"action": "say", "step": "s", "text": ""},
            {"action": "say", "step": "s", "text": " \x00\ud800\n "},
        ],
    )
    assert _tags(twiml_for(result, LINKS, _settings())) == ["Response", "Hangup"]
    assert _tags(apology_twiml(_settings(apology=""), LINKS)) == ["Response", "Hangup"]


# --- hostile text ------------------------------------------------------------------------------

HOSTILE = [
    pytest.param("a < b && c > d", id="angle-and-ampersand"),
    pytest.param("]]><Hangup/><![CDATA[", id="cdata-end"),
    pytest.param("</Say><Hangup/><Say>", id="closing-tag"),
    pytest.param('<speak><prosody rate="x-slow">hi</prosody></speak>', id="ssml"),
    pytest.param("&amp; &#x41; &lt;Hangup/&gt; &bogus;", id="entities"),
    pytest.param("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]>&e;", id="doctype"),
    pytest.param("tab\tnewline\nreturn\rcrlf\r\n", id="whitespace-controls"),
    pytest.param("nul\x00bell\x07esc\x1bdel\x7f", id="control-characters"),
    pytest.param("lone \ud800 and \udfff surrogates", id="lone-surrogates"),
    pytest.param("non-characters \ufffe\uffff end", id="non-characters"),
    pytest.param("emoji 📞 and RTL \u202e and zero-width \u200b", id="unicode"),
    pytest.param("quotes \" and ' and = in text", id="quotes"),
]


def _expected_text(text: str) -> str:
    """What a parser reads back: the text less what XML cannot carry, line ends as \\n."""
    return xml_text(text).replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_say_text_round_trips_without_new_elements(text: str) -> None:
    result = RunResult(
        "ended",
        [],
        [
            {"action": "say", "step": "a", "text": text},
            {"action": "hangup", "step": "b"},
        ],
    )
    document = twiml_for(result, LINKS, _settings(voice="Polly.Joanna"))
    assert _tags(document) == ["Response", "Say", "Hangup"]
    say = ET.fromstring(document.encode("utf-8")).find("Say")
    assert say is not None and say.text == _expected_text(text)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_prompt_round_trips_inside_the_gather(text: str) -> None:
    awaiting = {
        "step": "ask",
        "prompt": text,
        "max_digits": 4,
        "finish_on_key": "#",
        "timeout": 5.0,
        "prompt_url": "https://media.example.com/x.mp3?a=1&b=<2>",
    }
    result = RunResult("waiting_for_input", [], [], awaiting=awaiting)
    document = twiml_for(result, LINKS, _settings())
    assert _tags(document) == ["Response", "Gather", "Say", "Play"]
    root = ET.fromstring(document.encode("utf-8"))
    assert root.findtext("Gather/Say") == _expected_text(text)
    assert root.findtext("Gather/Play") == "https://media.example.com/x.mp3?a=1&b=<2>"


def test_hostile_text_through_a_real_run() -> None:
    case = CASES["hostile_say"]
    document = twiml_for(case.run(), LINKS, _settings())
    assert _tags(document) == ["Response", "Say", "Hangup"]
    say = ET.fromstring(document.encode("utf-8")).findtext("Say")
    assert say == 'a < b & c ]]> <Hangup/> <speak><break time="3s"/></speak> '


def test_a_megabyte_of_text_is_cut_and_parses_fast() -> None:
    text = ("<&]]>\x00\ud800" + "x" * 1000) * 1000
    result = RunResult("completed", [], [{"action": "say", "step": "a", "text": text}])
    awaiting = {"prompt": text, "max_digits": 4, "finish_on_key": "#", "timeout": 5}
    waiting = RunResult("waiting_for_input", [], [], awaiting=awaiting)
    started = time.perf_counter()
    documents = [twiml_for(result, LINKS, _settings()), twiml_for(waiting, LINKS, _settings())]
    assert time.perf_counter() - started < 2.0
    for document in documents:
        assert len(document) < 2 * MAX_SAY
        said = [e.text for e in ET.fromstring(document.encode("utf-8")).iter("Say")]
        assert said == [_expected_text(text[:MAX_SAY])]
    long_apology = _settings(apology="sorry " * 100_000)
    assert len(apology_twiml(long_apology, LINKS)) < 2 * MAX_SAY


def test_hostile_settings_text_is_escaped_too() -> None:
    settings = _settings(voice='x" onload="y', language="en<US>", apology="</Say><Reject/>")
    root = ET.fromstring(apology_twiml(settings, LINKS).encode("utf-8"))
    say = root.find("Say")
    assert say is not None and say.text == "</Say><Reject/>"
    assert say.attrib == {"voice": 'x" onload="y', "language": "en<US>"}
    assert [e.tag for e in root] == ["Say", "Hangup"]


_ANY_CHARACTER = st.one_of(
    st.characters(),
    st.integers(min_value=0, max_value=0x1F).map(chr),
    st.integers(min_value=0xD800, max_value=0xDFFF).map(chr),
    st.sampled_from(["<", ">", "&", "]]>", '"', "'", "\ufffe", "\uffff", "<Hangup/>"]),
)
_ANY_TEXT = st.lists(_ANY_CHARACTER, max_size=60).map("".join)


@given(say=_ANY_TEXT, prompt=_ANY_TEXT, voice=st.one_of(st.none(), _ANY_TEXT))
def test_any_text_gives_one_response_with_the_expected_children(
    say: str, prompt: str, voice: str | None
) -> None:
    awaiting = {"prompt": prompt, "max_digits": 3, "finish_on_key": "", "timeout": 1.2}
    result = RunResult(
        "waiting_for_input", [], [{"action": "say", "step": "a", "text": say}], awaiting=awaiting
    )
    document = twiml_for(result, LINKS, _settings(voice=voice))
    root = ET.fromstring(document.encode("utf-8"))
    assert root.tag == "Response"
    said = ["Say"] if xml_text(say).strip() else []
    assert [child.tag for child in root] == [*said, "Gather"]
    assert (root.findtext("Say") or "") == (_expected_text(say) if said else "")
    gather = root[-1]
    prompted = ["Say"] if xml_text(prompt).strip() else []
    assert [child.tag for child in gather] == prompted
    assert (gather.findtext("Say") or "") == (_expected_text(prompt) if prompted else "")
    assert gather.get("timeout") == "2"


_HOSTILE = st.text(
    alphabet=st.sampled_from(list("<>&\"'\r\n\t ]]>a\u00e9\u2028\U0001f600\x00\x1b\ud800")),
    max_size=30,
) | st.text(max_size=30)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Say", "Play", "Hangup", "Gather", "Dial"]),
            st.dictionaries(
                st.sampled_from(["action", "voice", "timeout", "finishOnKey"]), _HOSTILE, max_size=3
            ),
            st.one_of(st.none(), _HOSTILE),
            st.lists(st.one_of(st.none(), _HOSTILE), max_size=2),
        ),
        max_size=4,
    )
)
def test_documents_are_elementtrees_bytes(shapes: list[Any]) -> None:
    """The documents are written exactly as ET.tostring writes them, hostile text included
    (the writer uses ElementTree's own escaping)."""
    from flowlang.serve.twiml import _DECLARATION, _document

    def build() -> list[ET.Element]:
        elements = []
        for tag, attributes, text, children in shapes:
            element = ET.Element(tag, attributes)
            element.text = text
            for child_text in children:
                ET.SubElement(element, "Number").text = child_text
            elements.append(element)
        return elements

    response = ET.Element("Response")
    response.extend(build())
    assert _document(build()) == _DECLARATION + ET.tostring(response, encoding="unicode")


def test_documents_of_other_elements_are_still_elementtrees() -> None:
    """An element the fast writer does not take (a namespace, a tail, a non-text value) is
    written by ElementTree itself."""
    from flowlang.serve.twiml import _DECLARATION, _document

    odd = ET.Element("{urn:x}Say")
    tailed = ET.Element("Play")
    tailed.tail = "after <"
    for element in (odd, tailed):
        response = ET.Element("Response")
        response.append(element)
        assert _document([element]) == _DECLARATION + ET.tostring(response, encoding="unicode")
    numbered = ET.Element("Pause", {"length": 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        _document([numbered])


@hypothesis_settings(max_examples=500, deadline=None)
@given(_HOSTILE | st.text(alphabet=st.characters(), max_size=50))
def test_xml_text_removes_exactly_what_xml_cannot_carry(text: str) -> None:
    from flowlang.serve.twiml import _NOT_XML

    assert xml_text(text) == text.translate(_NOT_XML)
    assert not any(ord(char) in _NOT_XML for char in xml_text(text))
