"""KMS's error codes (docs/kms.md §2), in the kernel's one catalogue.

For version 2016-01-20 the kernel's parameter, throttling, 5xx and not-found
answers are replaced by KMS's own (``TRANSLATED``): the KMS SDKs and the
secrets client know those codes.
"""

from __future__ import annotations

from typing import Final

from rkvstore import errors
from rkvstore.errors import CATALOGUE, ErrorSpec
from rkvstore.products.kvstore import errors as kvstore_errors

_e = CATALOGUE.add

# The kernel's code with KMS's text: not catalogued (one entry per code), only
# answered for version 2016-01-20.
INVALID_PARAMETER = ErrorSpec("InvalidParameter", 400, "The specified parameter is not valid.")
LIMIT_EXCEEDED = _e("Rejected.LimitExceeded", 400, "The secret quota is exceeded.")
NO_PERMISSION = _e(
    "Forbidden.NoPermission", 403, "You are not authorized to perform the operation."
)
NOT_FOUND = _e("Forbidden.ResourceNotFound", 404, "The resource is not found.")
EXISTS = _e("Rejected.ResourceExist", 409, "The resource already exists.")
IN_DELETE_WINDOW = _e(
    "Rejected.ResourceInDeleteWindow", 409, "The secret is planned to be deleted."
)
THROTTLING = _e("Rejected.Throttling", 429, "The QPS upper limit is exceeded.")
INTERNAL_FAILURE = _e("InternalFailure", 500, "An internal error occurred.")
UNAVAILABLE = _e("ServiceUnavailableTemporary", 503, "The service is temporarily unavailable.")
DRY_RUN = _e(
    "DryRunOperationError",
    400,
    "The request would succeed if the DryRun parameter were not configured.",
)
TYPE_NOT_SUPPORTED = _e(
    "OperationDenied.SecretTypeNotSupported",
    403,
    "rkvstore manages only Redis secrets: SecretType must be Redis.",
)
POLICY_NOT_SUPPORTED = _e(
    "OperationDenied.SecretPolicyNotSupported",
    403,
    "rkvstore does not support secret policies: use RAM policies on kms:* actions.",
)

# The kernel's (and R-kvstore's) answers as KMS gives them. What is not here
# (signatures, MissingParameter, Forbidden.RAM, TaskExists, the instance's
# state, the engine version, the account limit) is answered as it is.
TRANSLATED: Final[dict[str, ErrorSpec]] = {
    errors.INVALID_PARAMETER.code: INVALID_PARAMETER,
    errors.THROTTLING_USER.code: THROTTLING,
    errors.INTERNAL_ERROR.code: INTERNAL_FAILURE,
    errors.SERVICE_UNAVAILABLE.code: UNAVAILABLE,
    errors.INSTANCE_NOT_FOUND.code: NOT_FOUND,
    kvstore_errors.ACCOUNT_NAME_DUPLICATE.code: EXISTS,
    kvstore_errors.ACCOUNT_NAME_NOT_FOUND.code: NOT_FOUND,
    kvstore_errors.ACCOUNT_NAME_FORMAT.code: INVALID_PARAMETER,
    kvstore_errors.ACCOUNT_NAME_FORBID.code: INVALID_PARAMETER,
}
