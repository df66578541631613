"""V1 and V3 request signatures (wire-protocol.md), checked without a server.

The SDK captures in ``shared/fixtures/sdk-captures`` are the test vectors:
every one must verify with ``testsecret`` when its inputs are built the way
the server builds them, and any change to what is signed must break it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkvstore.api.params import decode_pairs
from rkvstore.api.signing import (
    V3_REQUIRED_SIGNED_HEADERS,
    V3_SHA256,
    V3_SM3,
    SignatureFormatError,
    SignedRequest,
    V3Authorization,
    canonical_query,
    parse_v3_authorization,
    pct,
    sign_v3_headers,
    signed_request_v1,
    signed_request_v3,
    v1_signature,
    v1_string_to_sign,
    v3_canonical_request,
    v3_payload_hash,
    v3_signature,
    v3_string_to_sign,
)
from rkvstore.secret import MASK
from tests.conftest import FIXTURES, load_captures

SECRET = "testsecret"
FORM_TYPE = "application/x-www-form-urlencoded"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HEX = "0123456789abcdef"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


# ---------------------------------------------------------------- requests as the server sees them


@dataclass(frozen=True)
class Req:
    """One captured request, decoded the way ``dispatch`` decodes it."""

    label: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]  # wire order, names as sent
    body: bytes

    def lower_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            out[key] = f"{out[key]},{value}" if key in out else value
        return out

    def form(self) -> list[tuple[str, str]]:
        content_type = self.lower_headers().get("content-type", "")
        if content_type.split(";")[0].strip().lower() != FORM_TYPE:
            return []
        return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True)

    def signed(self) -> SignedRequest | None:
        query = list(self.query)
        return signed_request_v3(
            self.method, self.path, query, self.lower_headers(), self.body
        ) or signed_request_v1(self.method, query + self.form())

    def is_v3(self) -> bool:
        return "authorization" in self.lower_headers()

    def v3_auth(self) -> V3Authorization:
        auth = parse_v3_authorization(self.lower_headers()["authorization"])
        assert auth is not None
        return auth

    def with_query(self, query: list[tuple[str, str]]) -> Req:
        return replace(self, query=tuple(query))

    def with_header(self, index: int, value: str) -> Req:
        headers = list(self.headers)
        headers[index] = (headers[index][0], value)
        return replace(self, headers=tuple(headers))


def verifies(req: Req, secret: str = SECRET) -> bool:
    """Whether the server would accept the signature (a malformed one is not accepted)."""
    try:
        signed = req.signed()
    except SignatureFormatError:
        return False
    return signed is not None and signed.verify(secret)


def _load() -> list[Req]:
    reqs: list[Req] = []
    seen: dict[str, int] = {}
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for capture in load_captures(path.name):
            base = f"{path.stem}:{capture['label']}"
            seen[base] = seen.get(base, 0) + 1
            label = base if seen[base] == 1 else f"{base}#{seen[base]}"
            query_string = str(capture["query_string"])
            headers = capture["headers"]
            assert isinstance(headers, list)
            reqs.append(
                Req(
                    label=label,
                    method=str(capture["method"]),
                    path=str(capture["path"]),
                    query=tuple(parse_qsl(query_string, keep_blank_values=True)),
                    headers=tuple((str(n), str(v)) for n, v in headers),
                    body=str(capture["body"]).encode("utf-8"),
                )
            )
    return reqs


CAPTURES = _load()
FORM_CAPTURES = [r for r in CAPTURES if r.form()]
V3_CAPTURES = [r for r in CAPTURES if r.is_v3()]


def _params(reqs: list[Req]) -> list[object]:
    return [pytest.param(r, id=r.label) for r in reqs]


def test_the_capture_set_is_large_enough_to_mean_something() -> None:
    assert len(CAPTURES) >= 100
    assert len({r.label for r in CAPTURES}) == len(CAPTURES)
    assert len(V3_CAPTURES) >= 50
    assert len(CAPTURES) - len(V3_CAPTURES) >= 50
    assert len(FORM_CAPTURES) >= 3
    algorithms = {r.v3_auth().algorithm for r in V3_CAPTURES}
    assert algorithms == {V3_SHA256, V3_SM3}


# --------------------------------------------------------------------------- every capture verifies


@pytest.mark.parametrize("req", _params(CAPTURES))
def test_capture_verifies(req: Req) -> None:
    signed = req.signed()
    assert signed is not None
    assert signed.version == ("V3" if req.is_v3() else "V1")
    assert signed.access_key_id == "testid"
    assert signed.timestamp
    assert signed.nonce
    assert signed.verify(SECRET)
    assert not signed.verify(SECRET + "x")
    assert not signed.verify("testsecreT")
    assert not signed.verify("")


# --------------------------------------------------------------------------- mutations


def _changed_values(value: str) -> Iterator[str]:
    yield value + "0"
    yield value[:-1] if value else "x"
    if value.swapcase() != value:
        yield value.swapcase()


@pytest.mark.parametrize("req", _params(CAPTURES))
def test_changed_query_parameter_does_not_verify(req: Req) -> None:
    assert verifies(req)
    tried = 0
    for i, (key, value) in enumerate(req.query):
        if key == "Signature":  # changing the signature itself: see below
            continue
        for new in _changed_values(value):
            query = list(req.query)
            query[i] = (key, new)
            assert not verifies(req.with_query(query)), f"{key}={new!r} still verifies"
            tried += 1
        # dropping it, or renaming its key, breaks the signature too
        dropped = [p for j, p in enumerate(req.query) if j != i]
        assert not verifies(req.with_query(dropped)), f"without {key} still verifies"
        renamed = list(req.query)
        renamed[i] = (key + "X", value)
        assert not verifies(req.with_query(renamed)), f"{key} renamed still verifies"
    added = [*req.query, ("Extra", "1")]
    assert not verifies(req.with_query(added))
    assert tried > 0


@pytest.mark.parametrize("req", _params(V3_CAPTURES))
def test_v3_changed_signed_header_does_not_verify(req: Req) -> None:
    assert verifies(req)
    signed_headers = req.v3_auth().signed_headers
    tried = 0
    for i, (name, value) in enumerate(req.headers):
        if name.lower() not in signed_headers:
            continue
        for new in _changed_values(value):
            assert not verifies(req.with_header(i, new)), f"{name}: {new!r} still verifies"
            tried += 1
    assert tried >= len(signed_headers) * 2


@pytest.mark.parametrize("req", _params(V3_CAPTURES))
def test_v3_unsigned_headers_may_change(req: Req) -> None:
    """The mutation tests fail for the right reason: an unsigned header changes nothing."""
    signed_headers = req.v3_auth().signed_headers
    names = {n.lower() for n, _ in req.headers}
    assert "accept-encoding" in names
    assert "accept-encoding" not in signed_headers
    for i, (name, value) in enumerate(req.headers):
        lowered = name.lower()
        if lowered in signed_headers or lowered in ("authorization", "content-type"):
            continue
        assert verifies(req.with_header(i, value + "-changed")), name


@pytest.mark.parametrize("req", _params([r for r in CAPTURES if not r.is_v3()]))
def test_v1_signs_no_header(req: Req) -> None:
    for i, (name, value) in enumerate(req.headers):
        if name.lower() in ("content-type", "authorization"):
            continue
        assert verifies(req.with_header(i, value + "-changed")), name


def _v3_with_signature(req: Req, signature: str) -> Req:
    index = next(i for i, (n, _) in enumerate(req.headers) if n.lower() == "authorization")
    head, _, old = req.headers[index][1].rpartition("Signature=")
    assert len(old) == 64
    return req.with_header(index, head + "Signature=" + signature)


def _v1_with_signature(req: Req, signature: str) -> Req:
    return req.with_query([(k, signature if k == "Signature" else v) for k, v in req.query])


@pytest.mark.parametrize("req", _params(CAPTURES))
def test_changed_signature_does_not_verify(req: Req) -> None:
    if req.is_v3():
        given_sig = req.v3_auth().signature
        rebuild: Callable[[Req, str], Req] = _v3_with_signature
        alphabet = HEX
    else:
        given_sig = dict(req.query)["Signature"]
        rebuild = _v1_with_signature
        alphabet = B64 + "="
    assert verifies(rebuild(req, given_sig))
    for pos, char in enumerate(given_sig):
        current = char.lower() if req.is_v3() else char
        new = alphabet[(alphabet.index(current) + 1) % len(alphabet)]
        changed = given_sig[:pos] + new + given_sig[pos + 1 :]
        assert not verifies(rebuild(req, changed)), f"byte {pos} changed still verifies"
    if req.is_v3():
        # malformed: not hex, too short, too long
        for bad in ("g" + given_sig[1:], given_sig[:-1], given_sig + "0", ""):
            with pytest.raises(SignatureFormatError):
                rebuild(req, bad).signed()
    else:
        assert not verifies(rebuild(req, given_sig[:-1]))
        assert not verifies(rebuild(req, given_sig + "A"))
        with pytest.raises(SignatureFormatError):
            rebuild(req, "").signed()


@pytest.mark.parametrize("req", _params(FORM_CAPTURES))
def test_changed_form_body_does_not_verify(req: Req) -> None:
    assert verifies(req)
    for pos, byte in enumerate(req.body):
        new = ord("Y") if byte == ord("Z") else ord("Z")
        body = req.body[:pos] + bytes([new]) + req.body[pos + 1 :]
        assert not verifies(replace(req, body=body)), f"body byte {pos} changed still verifies"
    for body in (req.body + b"&Extra=1", req.body[:-1], b""):
        assert not verifies(replace(req, body=body)), body


@pytest.mark.parametrize("req", _params(V3_CAPTURES))
def test_v3_body_is_signed_whatever_its_type(req: Req) -> None:
    assert not verifies(replace(req, body=req.body + b"x"))


@pytest.mark.parametrize("req", _params(CAPTURES))
def test_changed_method_or_path_does_not_verify(req: Req) -> None:
    assert not verifies(replace(req, method="GET"))
    if req.is_v3():
        assert not verifies(replace(req, path="/x"))


# --------------------------------------------------------------------------- the worked examples


V1_EXAMPLE = [
    ("AccessKeyId", "testid"),
    ("AccountName", "demo"),
    ("AccountPassword", "P@ss w*1"),
    ("Action", "ResetAccountPassword"),
    ("Format", "json"),
    ("InstanceId", "r-1"),
    ("SignatureMethod", "HMAC-SHA1"),
    ("SignatureNonce", "n1"),
    ("SignatureVersion", "1.0"),
    ("Timestamp", "2025-01-01T00:00:00Z"),
    ("Version", "2015-01-01"),
]
V1_EXAMPLE_STS = (
    "POST&%2F&AccessKeyId%3Dtestid%26AccountName%3Ddemo%26AccountPassword%3DP%2540ss%2520w"
    "%252A1%26Action%3DResetAccountPassword%26Format%3Djson%26InstanceId%3Dr-1%26"
    "SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dn1%26SignatureVersion%3D1.0%26"
    "Timestamp%3D2025-01-01T00%253A00%253A00Z%26Version%3D2015-01-01"
)
V1_EXAMPLE_SIGNATURE = "NI0i+iBUCXjm7bzoJUkGT54a13E="


def test_v1_worked_example() -> None:
    assert v1_string_to_sign("POST", V1_EXAMPLE) == V1_EXAMPLE_STS
    assert v1_string_to_sign("post", list(reversed(V1_EXAMPLE))) == V1_EXAMPLE_STS
    assert v1_signature(SECRET, V1_EXAMPLE_STS) == V1_EXAMPLE_SIGNATURE
    signed = signed_request_v1("POST", [*V1_EXAMPLE, ("Signature", V1_EXAMPLE_SIGNATURE)])
    assert signed is not None
    assert signed.version == "V1"
    assert (signed.access_key_id, signed.timestamp, signed.nonce) == (
        "testid",
        "2025-01-01T00:00:00Z",
        "n1",
    )
    assert signed.verify(SECRET)
    assert not signed.verify("testsecret2")


V3_EXAMPLE_QUERY = [("AccountName", "demo"), ("AccountPassword", "P@ss w*1"), ("InstanceId", "r-1")]
V3_EXAMPLE_HEADERS = {
    "accept": "application/json",
    "host": "r-kvstore.aliyuncs.com",
    "x-acs-action": "ResetAccountPassword",
    "x-acs-content-sha256": EMPTY_SHA256,
    "x-acs-date": "2025-01-01T00:00:00Z",
    "x-acs-signature-nonce": "n1",
    "x-acs-version": "2015-01-01",
}
V3_EXAMPLE_CANONICAL_QUERY = "AccountName=demo&AccountPassword=P%40ss%20w%2A1&InstanceId=r-1"
V3_EXAMPLE_SIGNED_HEADERS = (
    "accept;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
)
V3_EXAMPLE_STS = (
    "ACS3-HMAC-SHA256\n0002f11c6dee4d70ac81792defe07141be3a7ec34bdf256e74e22792dde0ab1a"
)
V3_EXAMPLE_SIGNATURE = "227ff5ee55224228c0c80431afb9f4d26fe8c2d33f356ffaf8081abd69ad0b28"


def test_v3_worked_example_step_by_step() -> None:
    assert v3_payload_hash(V3_SHA256, b"") == EMPTY_SHA256
    assert canonical_query(V3_EXAMPLE_QUERY) == V3_EXAMPLE_CANONICAL_QUERY
    assert canonical_query(reversed(V3_EXAMPLE_QUERY)) == V3_EXAMPLE_CANONICAL_QUERY
    canonical = v3_canonical_request(
        method="POST",
        path="/",
        query=V3_EXAMPLE_QUERY,
        headers=V3_EXAMPLE_HEADERS,
        signed_headers=V3_EXAMPLE_SIGNED_HEADERS.split(";"),
        payload_hash=EMPTY_SHA256,
    )
    lines = canonical.split("\n")
    assert lines[:3] == ["POST", "/", V3_EXAMPLE_CANONICAL_QUERY]
    assert lines[3:10] == [f"{k}:{v}" for k, v in V3_EXAMPLE_HEADERS.items()]
    assert lines[10:] == ["", V3_EXAMPLE_SIGNED_HEADERS, EMPTY_SHA256]
    sts = v3_string_to_sign(V3_SHA256, canonical)
    assert sts == V3_EXAMPLE_STS
    assert v3_signature(V3_SHA256, SECRET, sts) == V3_EXAMPLE_SIGNATURE


def test_v3_worked_example_through_signer_and_verifier() -> None:
    given_headers = {k: v for k, v in V3_EXAMPLE_HEADERS.items() if k != "host"}
    given_headers.pop("x-acs-content-sha256")
    headers = sign_v3_headers(
        access_key_id="testid",
        secret=SECRET,
        method="POST",
        host="r-kvstore.aliyuncs.com",
        query=V3_EXAMPLE_QUERY,
        headers=given_headers,
    )
    assert headers["x-acs-content-sha256"] == EMPTY_SHA256
    assert headers["authorization"] == (
        f"ACS3-HMAC-SHA256 Credential=testid,SignedHeaders={V3_EXAMPLE_SIGNED_HEADERS},"
        f"Signature={V3_EXAMPLE_SIGNATURE}"
    )
    signed = signed_request_v3("POST", "/", V3_EXAMPLE_QUERY, headers, b"")
    assert signed is not None
    assert signed.version == "V3"
    assert (signed.access_key_id, signed.timestamp, signed.nonce) == (
        "testid",
        "2025-01-01T00:00:00Z",
        "n1",
    )
    assert signed.masked_string_to_sign == V3_EXAMPLE_STS
    assert signed.verify(SECRET)
    assert not signed.verify("testsecret2")


def test_pct_is_rfc3986() -> None:
    assert pct("AZaz09-_.~") == "AZaz09-_.~"
    assert pct(" ") == "%20"
    assert pct("*") == "%2A"
    assert pct("+/=&%") == "%2B%2F%3D%26%25"
    assert pct("测") == "%E6%B5%8B"


# --------------------------------------------------------------------- sign_v3_headers round trip

_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
_key = st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1, max_size=12)
_header_value = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Zl", "Zp")), max_size=30
)
_header_name = st.sampled_from(
    ["accept", "User-Agent", "x-acs-action", "X-Acs-Date", "x-acs-signature-nonce", "x-acs-foo"]
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    query=st.lists(st.tuples(_key, _text), max_size=8),
    headers=st.dictionaries(_header_name, _header_value, max_size=6),
    body=st.binary(max_size=40),
    algorithm=st.sampled_from([V3_SHA256, V3_SM3]),
    secret=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    quote_via=st.sampled_from([quote, quote_plus]),
)
def test_sign_v3_headers_round_trip(
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    algorithm: str,
    secret: str,
    quote_via: Callable[..., str],
) -> None:
    required = {k: "v" for k in sorted(V3_REQUIRED_SIGNED_HEADERS - {"host"})}
    signed_headers = sign_v3_headers(
        access_key_id="AK测试",
        secret=secret,
        method="POST",
        host="127.0.0.1:8080",
        query=query,
        headers={**required, **{k.lower(): v for k, v in headers.items()}},
        body=body,
        algorithm=algorithm,
    )
    assert signed_headers["authorization"].startswith(algorithm + " ")
    # as the server receives the query: encoded on the wire, decoded again
    wire = urlencode(query, quote_via=quote_via).encode()
    decoded = decode_pairs(wire, max_bytes=1 << 20, max_parameters=1000)
    assert sorted(decoded) == sorted(query)
    signed = signed_request_v3("POST", "/", decoded, signed_headers, body)
    assert signed is not None
    assert signed.access_key_id == "AK测试"
    assert signed.verify(secret)
    assert not signed.verify(secret + "x")
    # the payload is signed with the algorithm's own hash
    assert signed_headers["x-acs-content-sha256"] == v3_payload_hash(algorithm, body)
    tampered = signed_request_v3("POST", "/", [*decoded, ("x", "y")], signed_headers, body)
    assert tampered is not None
    assert not tampered.verify(secret)


@pytest.mark.parametrize("algorithm", [V3_SHA256, V3_SM3])
def test_sign_v3_headers_special_values(algorithm: str) -> None:
    query = [
        ("AccountPassword", "P@ss w*1!#$%^&()_+-="),
        ("AccountDescription", "测试 desc/~*+ é"),
        ("Empty", ""),
        ("Tag.1.Key", "a=b&c=d"),
    ]
    headers = {
        "x-acs-action": "CreateAccount",
        "x-acs-version": "2015-01-01",
        "x-acs-date": "2025-01-01T00:00:00Z",
        "x-acs-signature-nonce": "n",
        "user-agent": "ünïcödé/1.0 (测试)",
    }
    body = b"AccountName=demo&Extra=%E6%B5%8B"
    out = sign_v3_headers(
        access_key_id="testid",
        secret="sëcret&",
        method="POST",
        host="localhost:1",
        query=query,
        headers=headers,
        body=body,
        algorithm=algorithm,
    )
    hasher = hashlib.new("sm3") if algorithm == V3_SM3 else hashlib.sha256()
    hasher.update(body)
    assert out["x-acs-content-sha256"] == hasher.hexdigest()
    signed = signed_request_v3("POST", "/", query, out, body)
    assert signed is not None
    assert signed.verify("sëcret&")
    other = V3_SM3 if algorithm == V3_SHA256 else V3_SHA256
    swapped = dict(out, authorization=out["authorization"].replace(algorithm, other, 1))
    wrong_algorithm = signed_request_v3("POST", "/", query, swapped, body)
    assert wrong_algorithm is not None
    assert not wrong_algorithm.verify("sëcret&")


# --------------------------------------------------------------------------- parse_v3_authorization

SIG = "0123456789abcdef" * 4
VALID_AUTH = f"ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-date,Signature={SIG}"


def test_parse_v3_authorization_accepts_the_sdk_form() -> None:
    assert parse_v3_authorization(VALID_AUTH) == V3Authorization(
        V3_SHA256, "testid", ("host", "x-acs-date"), SIG
    )
    loose = f"  ACS3-HMAC-SM3  Credential=LTAI5t, SignedHeaders=accept, Signature={SIG.upper()}  "
    assert parse_v3_authorization(loose) == V3Authorization(V3_SM3, "LTAI5t", ("accept",), SIG)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("ACS3-HMAC-SHA256", id="algorithm-only"),
        pytest.param(f"Credential=testid,SignedHeaders=host,Signature={SIG}", id="no-algorithm"),
        pytest.param(f"ACS3-HMAC-SHA256 SignedHeaders=host,Signature={SIG}", id="no-credential"),
        pytest.param(
            f"ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature={SIG}",
            id="empty-credential",
        ),
        pytest.param(f"ACS3-HMAC-SHA256 Credential=testid,Signature={SIG}", id="no-signed-headers"),
        pytest.param(
            f"ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=,Signature={SIG}",
            id="empty-signed-headers",
        ),
        pytest.param("ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host", id="no-signature"),
        pytest.param(
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host,Signature=", id="empty-signature"
        ),
        pytest.param(VALID_AUTH[:-1], id="signature-63-hex"),
        pytest.param(VALID_AUTH + "0", id="signature-65-hex"),
        pytest.param(VALID_AUTH[:-1] + "g", id="signature-not-hex"),
        pytest.param(VALID_AUTH.replace(SIG, "+" + SIG[1:]), id="signature-base64"),
        pytest.param(VALID_AUTH.replace("host;x-acs-date", "host;;x-acs-date"), id="empty-name"),
        pytest.param(VALID_AUTH.replace("host;x-acs-date", ";host"), id="leading-empty-name"),
        pytest.param(VALID_AUTH.replace("host;x-acs-date", "host;"), id="trailing-empty-name"),
        pytest.param(VALID_AUTH.replace("host;x-acs-date", "ho st"), id="space-in-name"),
        pytest.param(VALID_AUTH.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SHA1"), id="alg-sha1"),
        pytest.param(VALID_AUTH.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-MD5"), id="alg-md5"),
        pytest.param(VALID_AUTH.replace("ACS3-HMAC-SHA256", "HMAC-SHA256"), id="alg-no-acs3"),
        pytest.param(VALID_AUTH.replace("ACS3-HMAC-SHA256", "ACS4-HMAC-SHA256"), id="alg-acs4"),
        pytest.param(VALID_AUTH.replace("ACS3-HMAC-SHA256 ", "ACS3-HMAC-SHA256"), id="no-space"),
        pytest.param(VALID_AUTH.replace(",", " "), id="no-commas"),
        pytest.param(VALID_AUTH + ",Extra=1", id="trailing-part"),
        pytest.param(VALID_AUTH.replace("Credential=", "Credential:"), id="colon-not-equals"),
    ],
)
def test_parse_v3_authorization_rejects_malformed(value: str) -> None:
    assert parse_v3_authorization(value) is None
    with pytest.raises(SignatureFormatError):
        signed_request_v3("POST", "/", [], {"authorization": value}, b"")


def test_no_signature_at_all_is_none() -> None:
    assert signed_request_v3("POST", "/", [("Signature", "x")], {}, b"") is None
    assert signed_request_v1("POST", [("AccessKeyId", "testid")]) is None


def test_v1_other_signature_method_is_malformed() -> None:
    params = [*V1_EXAMPLE, ("Signature", V1_EXAMPLE_SIGNATURE)]
    params = [(k, "HMAC-SHA256" if k == "SignatureMethod" else v) for k, v in params]
    with pytest.raises(SignatureFormatError):
        signed_request_v1("POST", params)


# --------------------------------------------------------------------------- masking secrets


SECRET_NAMES = [
    "AccountPassword",
    "NewAccountPassword",
    "OldAccountPassword",
    "Password",
    "AccessKeySecret",
]
PLAINTEXTS = ["Plaintext123", "P@ss w*1!#$%^&()_+-="]


def _encodings(value: str) -> set[str]:
    """Every form a value can take in a V1 string to sign."""
    return {value, pct(value), pct(pct(value)), quote_plus(value)}


@pytest.mark.parametrize("name", SECRET_NAMES)
@pytest.mark.parametrize("plaintext", PLAINTEXTS, ids=["alnum", "special"])
def test_v1_masked_string_to_sign_hides_secret(name: str, plaintext: str) -> None:
    params = [
        ("AccessKeyId", "testid"),
        ("Action", "ResetAccountPassword"),
        ("AccountName", "demo"),
        (name, plaintext),
        ("SignatureNonce", "n1"),
        ("Timestamp", "2025-01-01T00:00:00Z"),
        ("Signature", "bm90IHRoZSByaWdodCBvbmU="),
    ]
    signed = signed_request_v1("POST", params)
    assert signed is not None
    assert not signed.verify(SECRET)
    masked = signed.masked_string_to_sign
    for form in _encodings(plaintext):
        assert form not in masked
    assert MASK in masked, masked
    # everything that is not secret is still there to compare with
    assert masked.startswith("POST&%2F&")
    assert "AccountName%3Ddemo" in masked
    assert "SignatureNonce%3Dn1" in masked


def test_v1_masked_string_to_sign_hides_every_secret_at_once() -> None:
    params = [(name, f"Secret{i}Value!") for i, name in enumerate(SECRET_NAMES)]
    params += [("AccessKeyId", "testid"), ("Signature", "x")]
    signed = signed_request_v1("POST", params)
    assert signed is not None
    masked = signed.masked_string_to_sign
    for i in range(len(SECRET_NAMES)):
        for form in _encodings(f"Secret{i}Value!"):
            assert form not in masked
    assert masked.count(MASK) == len(SECRET_NAMES), masked


def test_v1_unmasked_request_keeps_its_string_to_sign() -> None:
    params = [(k, v) for k, v in V1_EXAMPLE if k != "AccountPassword"]
    signed = signed_request_v1("POST", [*params, ("Signature", "x")])
    assert signed is not None
    assert signed.masked_string_to_sign == v1_string_to_sign("POST", params)


def test_v3_masked_string_to_sign_holds_no_parameter_value() -> None:
    query = [("AccountPassword", "Plaintext123"), ("NewAccountPassword", "Other_pass_9")]
    headers = sign_v3_headers(
        access_key_id="testid",
        secret=SECRET,
        method="POST",
        host="h",
        query=query,
        headers={
            "x-acs-date": "2025-01-01T00:00:00Z",
            "x-acs-signature-nonce": "n",
            "x-acs-action": "ResetAccountPassword",
            "x-acs-version": "2015-01-01",
        },
    )
    signed = signed_request_v3("POST", "/", query, headers, b"")
    assert signed is not None
    masked = signed.masked_string_to_sign
    assert masked.startswith("ACS3-HMAC-SHA256\n")
    assert "Plaintext123" not in masked
    assert "Other_pass_9" not in masked


@pytest.mark.parametrize("missing", sorted(V3_REQUIRED_SIGNED_HEADERS))
def test_v3_must_sign_what_decides_time_nonce_target_and_action(missing: str) -> None:
    """A signature over fewer headers could be replayed with a fresh date and nonce."""
    given = {k: "v" for k in V3_REQUIRED_SIGNED_HEADERS - {"host", missing}}
    headers = sign_v3_headers(
        access_key_id="AK", secret="s", method="POST", host="h:1", query=[], headers=given
    )
    if missing == "host":  # sign_v3_headers always signs host: drop it from the list by hand
        headers["authorization"] = headers["authorization"].replace("host;", "")
    with pytest.raises(SignatureFormatError):
        signed_request_v3("POST", "/", [], headers, b"")
