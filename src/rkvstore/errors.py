"""The one catalogue of client-visible errors (api.md §2, §3).

Every error a client can see is an ``ApiError`` built from an entry here, so
its code, HTTP status and message are written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    code: str
    http_status: int
    message: str  # may hold ``{name}``-style fields filled by ``ApiError``


class ApiError(Exception):
    """An error answer: rendered by the API layer, raised anywhere below it."""

    def __init__(
        self,
        spec: ErrorSpec,
        *,
        headers: dict[str, str] | None = None,
        detail: dict[str, Any] | None = None,
        **fields: str,
    ) -> None:
        self.spec = spec
        self.code = spec.code.format(**fields) if fields else spec.code
        self.http_status = spec.http_status
        self.message = spec.message.format(**fields) if fields else spec.message
        self.headers = headers or {}
        self.detail = detail
        super().__init__(f"{self.code}: {self.message}")


@dataclass
class _Catalogue:
    by_code: dict[str, ErrorSpec] = field(default_factory=dict)

    def add(self, code: str, http_status: int, message: str) -> ErrorSpec:
        spec = ErrorSpec(code, http_status, message)
        if code in self.by_code:  # one code, one meaning: a product reuses the entry
            raise ValueError(f"error code {code} catalogued twice")
        self.by_code[code] = spec
        return spec


CATALOGUE = _Catalogue()
_e = CATALOGUE.add

# --- common (api.md §2)
MISSING_PARAMETER = _e(
    "MissingParameter",
    400,
    'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
)
INVALID_PARAMETER = _e("InvalidParameter", 400, 'The specified parameter "{name}" is not valid.')
MISSING_SIGNATURE = _e(
    "MissingSignature", 400, "The request signature does not conform to Aliyun standards."
)
INCOMPLETE_SIGNATURE = _e(
    "IncompleteSignature", 400, "The request signature does not conform to Aliyun standards."
)
SIGNATURE_DOES_NOT_MATCH = _e(
    "SignatureDoesNotMatch",
    400,
    "Specified signature is not matched with our calculation. server string to sign is:{sts}",
)
SIGNATURE_NONCE_USED = _e("SignatureNonceUsed", 400, "Specified signature nonce was used already.")
TIMESTAMP_EXPIRED = _e(
    "InvalidTimeStamp.Expired", 400, "Specified time stamp or date value is expired."
)
TIMESTAMP_FORMAT = _e(
    "InvalidTimeStamp.Format", 400, "Specified time stamp or date value is not well formatted."
)
ACCESS_KEY_NOT_FOUND = _e("InvalidAccessKeyId.NotFound", 404, "Specified access key is not found.")
ACCESS_KEY_DISABLED = _e("Forbidden.AccessKeyDisabled", 403, "The Access Key is disabled.")
FORBIDDEN_RAM = _e(
    "Forbidden.RAM",
    403,
    "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
)
ACTION_NOT_FOUND = _e(
    "InvalidAction.NotFound", 404, "Specified api is not found, please check your url and method."
)
INVALID_VERSION = _e("InvalidVersion", 400, "Specified parameter Version is not valid.")
INSTANCE_NOT_FOUND = _e("InvalidInstanceId.NotFound", 404, "The specified instance is not found.")
INCORRECT_INSTANCE_STATE = _e(
    "IncorrectDBInstanceState", 400, "Current DB instance state does not support this operation."
)
TASK_EXISTS = _e("TaskExists", 400, "Specified task have existed.")
THROTTLING_USER = _e("Throttling.User", 400, "Request was denied due to user flow control.")
SERVICE_UNAVAILABLE = _e(
    "ServiceUnavailable", 503, "The request has failed due to a temporary failure of the server."
)
INTERNAL_ERROR = _e(
    "InternalError", 500, "The request processing has failed due to some unknown error."
)

# --- request bounds (rkvstore's own: what arrives before any signature is checked)
REQUEST_TOO_LARGE = _e(
    "RequestEntityTooLarge", 413, "The query string or body is larger than {limit} bytes."
)
TOO_MANY_PARAMETERS = _e(
    "InvalidParameter.TooMany", 400, "The request has more than {limit} parameters."
)
DUPLICATE_PARAMETER = _e(
    "InvalidParameter.Duplicate", 400, 'The parameter "{name}" is given more than once.'
)
INVALID_ENCODING = _e(
    "InvalidParameter.Encoding", 400, "The request is not valid UTF-8 URL-encoded text."
)
METHOD_NOT_ALLOWED = _e("UnsupportedHTTPMethod", 405, "Only GET and POST on / are supported.")
INVALID_HTTP_REQUEST = _e(
    "InvalidHttpRequest", 400, "The request line or a header is not valid HTTP/1.1."
)

# --- policy documents (api.md §5): parsed by iam.policy for every product
# Alibaba's RAM API reference gives MalformedPolicyDocument HTTP 400 and, as its
# message, "{The error details}": the message is the reason itself, e.g. "Add an
# Action or NotAction element to the policy statement." (rkvstore.iam.policy).
MALFORMED_POLICY_DOCUMENT = _e("MalformedPolicyDocument", 400, "{reason}")
