"""flowlang.serve.signatures: Twilio's signatures, Standard Webhooks and bearer tokens.

The published vectors (Twilio's security page; the Standard Webhooks specification's, used by
its reference libraries) pin the algorithms; every other case changes one thing and must fail,
and hostile headers never raise anything but WebhookAuthError (nor say a secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowlang.serve.signatures import (
    MAX_SIGNATURE,
    WebhookAuthError,
    bearer_valid,
    standard_webhook_key,
    standard_webhook_signature,
    twilio_request_valid,
    twilio_signature,
    verify_standard_webhook,
)

# --- Twilio ------------------------------------------------------------------------------------

#: twilio.com/docs/usage/security: the published example.
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_TOKEN = "12345"
VECTOR_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
]
VECTOR_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
SHA256_SETTINGS = "key=SK0123,algorithm=HMAC_SHA256"


def _by_hand(key: str, text: str, digest: str = "sha1") -> str:
    """HMAC over the exact text Twilio documents, written out in the test."""
    return base64.b64encode(hmac.new(key.encode(), text.encode(), digest).digest()).decode()


def test_twilio_published_vector() -> None:
    assert twilio_signature(VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    shuffled = list(reversed(VECTOR_PARAMS))
    assert twilio_request_valid([VECTOR_TOKEN], VECTOR_URL, shuffled, VECTOR_SIGNATURE)


def test_twilio_signature_is_the_documented_text() -> None:
    text = VECTOR_URL + "".join(name + value for name, value in sorted(VECTOR_PARAMS))
    assert _by_hand(VECTOR_TOKEN, text) == VECTOR_SIGNATURE


def test_twilio_repeated_names_sort_by_value() -> None:
    url = "https://ivr.example.com/voice/main"
    params = [("To", "b"), ("A", "1"), ("To", "a"), ("To", "a")]
    expected = _by_hand("k", url + "A1" + "Toa" + "Toa" + "Tob")
    assert twilio_signature("k", url, params) == expected
    assert twilio_request_valid(["k"], url, params, expected)
    # one repeat fewer is another request
    assert not twilio_request_valid(["k"], url, params[:3], expected)
    # twilio-python's validator signs an identical repeated pair once: that verifies too
    once = _by_hand("k", url + "A1" + "Toa" + "Tob")
    assert twilio_request_valid(["k"], url, params, once)
    assert not twilio_request_valid(["k"], url, [*params, ("To", "c")], once)


@pytest.mark.parametrize(
    ("signed_url", "checked_url", "valid"),
    [
        pytest.param(
            "https://x.example.com:443/voice/a?seq=2",
            "https://x.example.com/voice/a?seq=2",
            True,
            id="signed-with-443",
        ),
        pytest.param(
            "https://x.example.com/voice/a?seq=2",
            "https://x.example.com:443/voice/a?seq=2",
            True,
            id="checked-with-443",
        ),
        pytest.param(
            "http://x.example.com:80/voice/a",
            "http://x.example.com/voice/a",
            True,
            id="signed-with-80",
        ),
        pytest.param(
            "http://x.example.com/voice/a",
            "http://x.example.com:80/voice/a",
            True,
            id="checked-with-80",
        ),
        pytest.param(
            "https://x.example.com:8443/voice/a",
            "https://x.example.com/voice/a",
            False,
            id="other-port-is-another-url",
        ),
        pytest.param(
            "https://x.example.com/voice/a",
            "https://x.example.com:8443/voice/a",
            False,
            id="other-port-checked",
        ),
        pytest.param(
            "https://x.example.com:80/voice/a",
            "https://x.example.com/voice/a",
            False,
            id="http-port-on-https",
        ),
        pytest.param(
            "https://x.example.com/voice/a?seq=2",
            "https://x.example.com/voice/a?seq=3",
            False,
            id="other-query",
        ),
        pytest.param(
            "https://x.example.com/voice/a", "https://y.example.com/voice/a", False, id="other-host"
        ),
        pytest.param(
            "https://x.example.com/voice/a",
            "http://x.example.com/voice/a",
            False,
            id="other-scheme",
        ),
    ],
)
def test_twilio_default_port(signed_url: str, checked_url: str, valid: bool) -> None:
    signature = twilio_signature("tok", signed_url, VECTOR_PARAMS)
    assert twilio_request_valid(["tok"], checked_url, VECTOR_PARAMS, signature) is valid


def test_twilio_sha256_variant() -> None:
    text = VECTOR_URL + "".join(name + value for name, value in sorted(VECTOR_PARAMS))
    expected = _by_hand(VECTOR_TOKEN, text, "sha256")
    assert twilio_signature(VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, "sha256") == expected
    assert twilio_request_valid(
        [VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, expected, SHA256_SETTINGS
    )
    assert twilio_request_valid(
        [VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, expected, "algorithm=hmac_sha256, key=x"
    )
    # the header chooses the algorithm: neither signature passes under the other one
    assert not twilio_request_valid([VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, expected)
    assert not twilio_request_valid(
        [VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE, SHA256_SETTINGS
    )
    for unknown in ("key=x,algorithm=HMAC_SHA512", "algorithm=" + "A" * 2000, "algorithm=ä"):
        assert not twilio_request_valid(
            [VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, expected, unknown
        )
    with pytest.raises(ValueError, match="sha1 or sha256"):
        twilio_signature("k", VECTOR_URL, [], "md5")


def test_twilio_rotation_any_key_verifies() -> None:
    assert twilio_request_valid(
        ["new-token", "", VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE
    )
    assert not twilio_request_valid(
        ["new-token", "other"], VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE
    )
    assert not twilio_request_valid([], VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    ("url", "params"),
    [
        pytest.param(
            VECTOR_URL,
            [*VECTOR_PARAMS[:2], ("Digits", "1235"), *VECTOR_PARAMS[3:]],
            id="tampered-digits",
        ),
        pytest.param(VECTOR_URL, [*VECTOR_PARAMS, ("Extra", "")], id="added-param"),
        pytest.param(VECTOR_URL, VECTOR_PARAMS[1:], id="missing-param"),
        pytest.param(
            VECTOR_URL, [("callsid", "CA1234567890ABCDE"), *VECTOR_PARAMS[1:]], id="name-case"
        ),
        pytest.param(
            "https://mycompany.com/myapp.php?foo=1&bar=3", VECTOR_PARAMS, id="tampered-query"
        ),
        pytest.param("https://mycompany.com/myapp.php", VECTOR_PARAMS, id="no-query"),
        pytest.param(
            "https://evil.example.com/myapp.php?foo=1&bar=2", VECTOR_PARAMS, id="wrong-host"
        ),
        pytest.param("https://mycompany.com/myapp.php?foo=1&bar=2#x", VECTOR_PARAMS, id="fragment"),
        pytest.param(
            "https://mycompany.com:99999/myapp.php?foo=1&bar=2", VECTOR_PARAMS, id="bad-port"
        ),
    ],
)
def test_twilio_forged_or_tampered_fails(url: str, params: list[tuple[str, str]]) -> None:
    assert not twilio_request_valid([VECTOR_TOKEN], url, params, VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("0/KCTR6DLpKmkAf8muzZqo1nDgQ", id="truncated"),
        pytest.param(VECTOR_SIGNATURE.lower(), id="case-changed"),
        pytest.param("0/KCTR6DLpKmkAf8muzZqo1nDgQ=é", id="non-ascii"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(VECTOR_SIGNATURE + " " * MAX_SIGNATURE, id="huge"),
        pytest.param("A" * 1_000_000, id="one-megabyte"),
    ],
)
def test_twilio_unreadable_signatures_are_false(signature: str | None) -> None:
    assert twilio_request_valid([VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, signature) is False


def test_twilio_json_body_hash() -> None:
    body = b'{"CallSid": "CA1", "Digits": "12"}'
    digest = hashlib.sha256(body).hexdigest()
    url = f"https://ivr.example.com/twilio/status?bodySHA256={digest}"
    signature = _by_hand("tok", url)  # the URL alone: no parameters
    assert twilio_request_valid(["tok"], url, [], signature, body=body)
    # parameters are not signed with a body hash (what a form parser made of JSON is ignored)
    assert twilio_request_valid(["tok"], url, [("junk", "x")], signature, body=body)
    assert not twilio_request_valid(["tok"], url, [], signature, body=body + b" ")
    assert not twilio_request_valid(["tok"], url, [], signature)  # no body given
    twice = f"{url}&bodySHA256={digest}"
    assert not twilio_request_valid(["tok"], twice, [], _by_hand("tok", twice), body=body)
    # a form request ignores body
    assert twilio_request_valid(
        [VECTOR_TOKEN], VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE, body=b"anything"
    )


def test_twilio_parameters_that_are_not_pairs_of_text_are_false() -> None:
    for params in ([("a",)], [("a", 1)], [None], ["ab"]):
        assert not twilio_request_valid(["k"], VECTOR_URL, params, VECTOR_SIGNATURE)  # type: ignore[arg-type]


_TEXT = st.text(max_size=40)


@given(
    url=st.one_of(_TEXT, st.just(VECTOR_URL), st.just("https://[::1/x"), st.just("http://h:x/")),
    params=st.lists(st.tuples(_TEXT, _TEXT), max_size=6),
    signature=st.one_of(st.none(), _TEXT, st.just(VECTOR_SIGNATURE)),
    settings_header=st.one_of(st.none(), _TEXT, st.just(SHA256_SETTINGS)),
    body=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_twilio_hostile_inputs_never_raise(
    url: str,
    params: list[tuple[str, str]],
    signature: str | None,
    settings_header: str | None,
    body: bytes | None,
) -> None:
    valid = twilio_request_valid([VECTOR_TOKEN], url, params, signature, settings_header, body=body)
    if valid:  # only the real signature over the real request passes
        assert signature == VECTOR_SIGNATURE


# --- Standard Webhooks -------------------------------------------------------------------------

#: The Standard Webhooks specification's vector (its reference libraries test with it).
WH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WH_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
WH_TIMESTAMP = 1614265330
WH_BODY = b'{"test": 2432232314}'
WH_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another endpoint secret, 32 bytes").decode()
REASONS = {
    "missing headers",
    "bad headers",
    "bad timestamp",
    "stale timestamp",
    "bad signature",
    "bad body",
}


def _headers(signature: str = WH_SIGNATURE, stamp: int | str = WH_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": WH_ID, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def _reason(secrets: list[str], headers: dict[str, str], body: bytes, now: float) -> str:
    with pytest.raises(WebhookAuthError) as caught:
        verify_standard_webhook(secrets, headers, body, now=now)
    reason = caught.value.reason
    assert str(caught.value) == reason and reason in REASONS
    return reason


def test_standard_webhook_vector() -> None:
    assert standard_webhook_signature(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_BODY) == WH_SIGNATURE
    bare = WH_SECRET.removeprefix("whsec_")
    assert standard_webhook_signature(bare, WH_ID, WH_TIMESTAMP, WH_BODY) == WH_SIGNATURE
    key = base64.b64decode(bare)
    mac = hmac.new(key, f"{WH_ID}.{WH_TIMESTAMP}.".encode() + WH_BODY, "sha256").digest()
    assert "v1," + base64.b64encode(mac).decode() == WH_SIGNATURE
    assert verify_standard_webhook([WH_SECRET], _headers(), WH_BODY, now=WH_TIMESTAMP) == WH_ID


def test_standard_webhook_tampering_fails() -> None:
    now = WH_TIMESTAMP + 10
    assert _reason([WH_SECRET], _headers(), WH_BODY + b" ", now) == "bad signature"
    assert _reason([WH_SECRET], _headers(), b'{"test": 2432232315}', now) == "bad signature"
    other_id = {**_headers(), "webhook-id": "msg_other"}
    assert _reason([WH_SECRET], other_id, WH_BODY, now) == "bad signature"
    # another timestamp (still fresh) is another signed text
    assert _reason([WH_SECRET], _headers(stamp=WH_TIMESTAMP + 1), WH_BODY, now) == "bad signature"
    assert _reason([OTHER_SECRET], _headers(), WH_BODY, now) == "bad signature"
    assert (
        _reason([WH_SECRET], _headers("v1a," + WH_SIGNATURE[3:]), WH_BODY, now) == "bad signature"
    )
    assert _reason([WH_SECRET], _headers(WH_SIGNATURE[3:]), WH_BODY, now) == "bad signature"


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86400 * 365, False)],
)
def test_standard_webhook_timestamp_window(offset: int, fresh: bool) -> None:
    now = WH_TIMESTAMP + offset
    if fresh:
        assert verify_standard_webhook([WH_SECRET], _headers(), WH_BODY, now=now) == WH_ID
    else:
        assert _reason([WH_SECRET], _headers(), WH_BODY, now) == "stale timestamp"


def test_standard_webhook_stale_is_judged_before_the_signature() -> None:
    old = WH_TIMESTAMP - 3600
    signature = standard_webhook_signature(WH_SECRET, WH_ID, old, WH_BODY)
    assert (
        _reason([WH_SECRET], _headers(signature, old), WH_BODY, WH_TIMESTAMP) == "stale timestamp"
    )
    assert _reason([WH_SECRET], _headers(), WH_BODY, float("nan")) == "stale timestamp"


def test_standard_webhook_several_signatures_one_valid() -> None:
    forged = "v1," + base64.b64encode(b"x" * 32).decode()
    for header in (
        f"{forged} {WH_SIGNATURE}",
        f"{WH_SIGNATURE} {forged}",
        f"v1a,abc {forged}  {WH_SIGNATURE}",
    ):
        assert (
            verify_standard_webhook([WH_SECRET], _headers(header), WH_BODY, now=WH_TIMESTAMP)
            == WH_ID
        )
    assert (
        _reason([WH_SECRET], _headers(f"{forged} {forged}"), WH_BODY, WH_TIMESTAMP)
        == "bad signature"
    )
    # only the first MAX_WEBHOOK_SIGNATURES entries are looked at
    many = " ".join([forged] * 16 + [WH_SIGNATURE])
    assert _reason([WH_SECRET], _headers(many), WH_BODY, WH_TIMESTAMP) == "bad signature"


def test_standard_webhook_rotation() -> None:
    assert (
        verify_standard_webhook([OTHER_SECRET, WH_SECRET], _headers(), WH_BODY, now=WH_TIMESTAMP)
        == WH_ID
    )
    signed_new = standard_webhook_signature(OTHER_SECRET, WH_ID, WH_TIMESTAMP, WH_BODY)
    assert (
        verify_standard_webhook(
            [OTHER_SECRET, WH_SECRET], _headers(signed_new), WH_BODY, now=WH_TIMESTAMP
        )
        == WH_ID
    )
    assert _reason([], _headers(), WH_BODY, WH_TIMESTAMP) == "bad signature"


def test_standard_webhook_header_names_in_any_case() -> None:
    headers = {
        "Webhook-Id": WH_ID,
        "WEBHOOK-TIMESTAMP": str(WH_TIMESTAMP),
        "webhook-Signature": WH_SIGNATURE,
    }
    assert verify_standard_webhook([WH_SECRET], headers, WH_BODY, now=WH_TIMESTAMP) == WH_ID


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"webhook-id": ""}, "missing headers", id="empty-id"),
        pytest.param({"webhook-signature": ""}, "missing headers", id="empty-signature"),
        pytest.param({"webhook-id": "m" * 257}, "bad headers", id="long-id"),
        pytest.param({"webhook-id": "msg\n1"}, "bad headers", id="newline-in-id"),
        pytest.param({"webhook-id": "msg_é"}, "bad headers", id="non-ascii-id"),
        pytest.param(
            {"webhook-signature": WH_SIGNATURE + " " + "v1,x" * 2000},
            "bad headers",
            id="huge-signature",
        ),
        pytest.param({"webhook-signature": "v1,\x00"}, "bad headers", id="nul-signature"),
        pytest.param({"webhook-timestamp": "-1614265330"}, "bad timestamp", id="negative"),
        pytest.param({"webhook-timestamp": "1614265330.5"}, "bad timestamp", id="fraction"),
        pytest.param(
            {"webhook-timestamp": "１６１４２６５３３０"}, "bad timestamp", id="full-width-digits"
        ),
        pytest.param({"webhook-timestamp": "1" * 5000}, "bad timestamp", id="huge"),
        pytest.param({"webhook-timestamp": "1_614_265_330"}, "bad timestamp", id="underscores"),
    ],
)
def test_standard_webhook_bad_headers(change: dict[str, str], reason: str) -> None:
    headers = {**_headers(), **change}
    assert _reason([WH_SECRET], headers, WH_BODY, WH_TIMESTAMP) == reason


def test_standard_webhook_missing_each_header() -> None:
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = {k: v for k, v in _headers().items() if k != name}
        assert _reason([WH_SECRET], headers, WH_BODY, WH_TIMESTAMP) == "missing headers"


def test_standard_webhook_bad_secret_is_a_configuration_error_without_its_text() -> None:
    for secret in ("whsec_not base64!", "whsec_", "ä" * 10, "whsec_" + "A" * 3):
        with pytest.raises(ValueError) as caught:
            standard_webhook_key(secret)
        assert not isinstance(caught.value, WebhookAuthError)
        assert secret.removeprefix("whsec_") not in str(caught.value) or not secret.removeprefix(
            "whsec_"
        )
        with pytest.raises(ValueError):
            verify_standard_webhook([secret], _headers(), WH_BODY, now=WH_TIMESTAMP)
    assert standard_webhook_key(WH_SECRET) == base64.b64decode(WH_SECRET[6:])


_HEADER_NAMES = st.sampled_from(
    ["webhook-id", "webhook-timestamp", "webhook-signature", "Webhook-Id", "x-other"]
)
_HEADER_VALUES = st.one_of(
    st.text(max_size=60),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.just(str(WH_TIMESTAMP)),
    st.just(WH_SIGNATURE),
    st.just(WH_ID),
    st.lists(st.sampled_from([WH_SIGNATURE, "v1,", "v1a,x", "v1,AAAA"]), max_size=20).map(" ".join),
)


@given(
    headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=5),
    body=st.one_of(st.binary(max_size=200), st.just(WH_BODY)),
    now=st.one_of(st.just(float(WH_TIMESTAMP)), st.floats(allow_nan=True)),
)
def test_standard_webhook_hostile_headers_only_raise_auth_errors(
    headers: dict[str, str], body: bytes, now: float
) -> None:
    try:
        message_id = verify_standard_webhook([OTHER_SECRET, WH_SECRET], headers, body, now=now)
    except WebhookAuthError as error:
        assert error.reason in REASONS
        for secret in (WH_SECRET, OTHER_SECRET):
            assert secret[6:] not in str(error) and secret[6:] not in repr(error)
    else:  # only the vector itself passes
        assert message_id == WH_ID and body == WH_BODY


# --- bearer tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "valid"),
    [
        ("Bearer s3cret-token", True),
        ("bearer s3cret-token", True),
        ("BEARER  s3cret-token ", True),
        ("Bearer rotated-token", True),
        ("Bearer s3cret-token2", False),
        ("Bearer s3cret-toke", False),
        ("Basic s3cret-token", False),
        ("s3cret-token", False),
        ("Bearer ", False),
        ("Bearer", False),
        ("", False),
        (None, False),
        ("Bearer s3cret-tokén", False),
        ("Bearer s3cret-token\r\n", False),
        ("Bearer " + "a" * 100_000, False),
    ],
)
def test_bearer(authorization: str | None, valid: bool) -> None:
    assert bearer_valid(["s3cret-token", "", "rotated-token"], authorization) is valid


def test_bearer_empty_token_never_matches() -> None:
    assert not bearer_valid([""], "Bearer ")
    assert not bearer_valid([], "Bearer x")


@given(st.one_of(st.none(), st.text(max_size=80)))
def test_bearer_hostile_never_raises(authorization: str | None) -> None:
    """Only ``Bearer tok`` (the scheme in any case, spaces around) passes."""
    if bearer_valid(["tok"], authorization):
        assert authorization is not None
        scheme, token = authorization.split(" ", 1)
        assert scheme.lower() == "bearer" and token.strip(" ") == "tok"


def test_signed_url_forms_are_the_same_kept_or_not_and_the_kept_ones_are_bounded() -> None:
    """A URL's forms (as given, with and without the default port) verify the same whether
    they were kept from an earlier request, computed afresh, or too long to keep; at most
    _KEPT_URLS of them are kept whatever URLs arrive."""
    from flowlang.serve import signatures

    params = [("CallSid", "CA1"), ("Digits", "1")]
    for path in ("/voice/menu?seq=3", "/voice/" + "m" * 600 + "?seq=3"):
        signed = twilio_signature("tok", "https://ivr.example.com:443" + path, params)
        for _ in range(2):  # the second time from the kept forms (when short)
            assert twilio_request_valid(["tok"], "https://ivr.example.com" + path, params, signed)
            assert not twilio_request_valid(
                ["tok"], "https://ivr.example.com" + path + "4", params, signed
            )
    for index in range(signatures._KEPT_URLS + 200):
        twilio_request_valid(
            ["tok"], f"https://ivr.example.com/voice/menu?seq={index}", params, "x"
        )
    assert signatures._kept_signed_urls.cache_info().currsize <= signatures._KEPT_URLS
