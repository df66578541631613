"""The two signature recipes of Alibaba Cloud RPC APIs (wire-protocol.md).

Pure functions: the verifier (server) and the signer (``rkvstore call``, tests)
build the string to sign with the same code, so they cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from rkvstore.secret import MASK, SECRET_PARAMETERS

V1_METHOD: Final = "HMAC-SHA1"
V3_SHA256: Final = "ACS3-HMAC-SHA256"
V3_SM3: Final = "ACS3-HMAC-SM3"
V3_REQUIRED_SIGNED_HEADERS: Final = frozenset(
    {"host", "x-acs-date", "x-acs-signature-nonce", "x-acs-action", "x-acs-version"}
)

Pairs = Sequence[tuple[str, str]]


def pct(value: str) -> str:
    """RFC 3986 percent-encoding of the UTF-8 bytes (keeps ``A-Za-z0-9-_.~``)."""
    return quote(value, safe="~")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{pct(k)}={pct(v)}" for k, v in sorted(pairs))


def _masked_canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """The canonical query with each secret value shown as ``******`` (after encoding)."""
    return "&".join(
        f"{pct(k)}={MASK if k in SECRET_PARAMETERS and v else pct(v)}" for k, v in sorted(pairs)
    )


# --------------------------------------------------------------------------- V1


def v1_string_to_sign(
    method: str, params: Iterable[tuple[str, str]], *, masked: bool = False
) -> str:
    """``METHOD&%2F&pct(canonical query)`` over every parameter but ``Signature``.

    ``masked`` shows secret parameter values as ``******`` (for error messages).
    """
    signed = [(k, v) for k, v in params if k != "Signature"]
    query = _masked_canonical_query(signed) if masked else canonical_query(signed)
    return f"{method.upper()}&%2F&{pct(query).replace(pct(MASK), MASK)}"


def v1_signature(secret: str, string_to_sign: str) -> str:
    mac = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


# --------------------------------------------------------------------------- V3


def _hash_factory(algorithm: str) -> Callable[[], hashlib._Hash]:
    if algorithm == V3_SM3:
        return lambda: hashlib.new("sm3")
    return hashlib.sha256


def v3_payload_hash(algorithm: str, body: bytes) -> str:
    h = _hash_factory(algorithm)()
    h.update(body)
    return h.hexdigest()


def v3_canonical_request(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """``headers`` maps lower-case names to values; a missing signed header is empty."""
    canonical_headers = "".join(
        f"{name}:{headers.get(name, '').strip()}\n" for name in signed_headers
    )
    return "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(query),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def v3_string_to_sign(algorithm: str, canonical_request: str) -> str:
    digest = _hash_factory(algorithm)()
    digest.update(canonical_request.encode())
    return f"{algorithm}\n{digest.hexdigest()}"


def v3_signature(algorithm: str, secret: str, string_to_sign: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), _hash_factory(algorithm)).hexdigest()


_AUTH_RE = re.compile(
    r"^(?P<alg>ACS3-HMAC-SHA256|ACS3-HMAC-SM3) +"
    r"Credential=(?P<cred>[^,\s]+), *"
    r"SignedHeaders=(?P<sh>[a-z0-9\-;]+), *"
    r"Signature=(?P<sig>[0-9a-fA-F]{64})$"
)


@dataclass(frozen=True)
class V3Authorization:
    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_v3_authorization(value: str) -> V3Authorization | None:
    """Parse an ``Authorization`` header; ``None`` when it is not well formed."""
    m = _AUTH_RE.match(value.strip())
    if m is None:
        return None
    signed = tuple(m["sh"].split(";"))
    if any(not name for name in signed):
        return None
    return V3Authorization(m["alg"], m["cred"], signed, m["sig"].lower())


# --------------------------------------------------------------------------- a request to verify


@dataclass(frozen=True)
class SignedRequest:
    """What a request claims: key, time, nonce, and how to check the signature."""

    version: str  # "V1" or "V3"
    access_key_id: str
    timestamp: str
    nonce: str
    _expected: Callable[[str], str]
    _given: str
    masked_string_to_sign: str  # for SignatureDoesNotMatch: no secret parameter value

    def verify(self, secret: str) -> bool:
        return hmac.compare_digest(self._expected(secret).encode(), self._given.encode())


class SignatureFormatError(Exception):
    """The request is signed, but not in a form we can read (IncompleteSignature)."""


def signed_request_v1(method: str, params: Pairs) -> SignedRequest | None:
    """``None`` when the request carries no V1 signature at all."""
    values = dict(params)
    signature = values.get("Signature")
    if signature is None:
        return None
    if values.get("SignatureMethod", V1_METHOD) != V1_METHOD or not signature:
        raise SignatureFormatError
    sts = v1_string_to_sign(method, params)
    return SignedRequest(
        version="V1",
        access_key_id=values.get("AccessKeyId", ""),
        timestamp=values.get("Timestamp", ""),
        nonce=values.get("SignatureNonce", ""),
        _expected=lambda secret: v1_signature(secret, sts),
        _given=signature,
        masked_string_to_sign=v1_string_to_sign(method, params, masked=True),
    )


def signed_request_v3(
    method: str,
    path: str,
    query: Pairs,
    headers: Mapping[str, str],
    body: bytes,
) -> SignedRequest | None:
    """``None`` without an ``Authorization`` header; ``headers`` keys are lower-case."""
    raw = headers.get("authorization")
    if raw is None:
        return None
    auth = parse_v3_authorization(raw)
    # What decides the call's time, nonce, target and action must be signed,
    # else a captured request could be replayed with a fresh date and nonce.
    if auth is None or not set(auth.signed_headers) >= V3_REQUIRED_SIGNED_HEADERS:
        raise SignatureFormatError
    try:
        canonical = v3_canonical_request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            signed_headers=auth.signed_headers,
            payload_hash=v3_payload_hash(auth.algorithm, body),
        )
        sts = v3_string_to_sign(auth.algorithm, canonical)
    except ValueError as exc:  # an OpenSSL without SM3
        raise SignatureFormatError from exc
    return SignedRequest(
        version="V3",
        access_key_id=auth.access_key_id,
        timestamp=headers.get("x-acs-date", ""),
        nonce=headers.get("x-acs-signature-nonce", ""),
        _expected=lambda secret: v3_signature(auth.algorithm, secret, sts),
        _given=auth.signature,
        # The V3 string to sign is a hash: it holds no parameter value.
        masked_string_to_sign=sts,
    )


# --------------------------------------------------------------------------- signing (client side)


def sign_v3_headers(
    *,
    access_key_id: str,
    secret: str,
    method: str,
    host: str,
    query: Pairs,
    headers: Mapping[str, str],
    body: bytes = b"",
    algorithm: str = V3_SHA256,
) -> dict[str, str]:
    """Return ``headers`` plus ``x-acs-content-sha256`` and ``Authorization``.

    Every header given (names lower-cased) and ``host`` are signed, as the SDK does.
    """
    all_headers = {k.lower(): v for k, v in headers.items()}
    all_headers["host"] = host
    all_headers["x-acs-content-sha256"] = v3_payload_hash(algorithm, body)
    signed = sorted(all_headers)
    canonical = v3_canonical_request(
        method=method,
        path="/",
        query=query,
        headers=all_headers,
        signed_headers=signed,
        payload_hash=all_headers["x-acs-content-sha256"],
    )
    signature = v3_signature(algorithm, secret, v3_string_to_sign(algorithm, canonical))
    all_headers["authorization"] = (
        f"{algorithm} Credential={access_key_id},SignedHeaders={';'.join(signed)},"
        f"Signature={signature}"
    )
    return all_headers
