"""RAM's own error codes (api.md §5, issue 4), in the kernel's one catalogue.

``MalformedPolicyDocument`` stays in ``rkvstore.errors``: policy documents are
parsed by the kernel's ``iam.policy``, which every product's authorization uses.
"""

from __future__ import annotations

from rkvstore.errors import CATALOGUE

_e = CATALOGUE.add

ENTITY_NOT_EXIST_USER = _e("EntityNotExist.User", 404, "The user does not exist.")
ENTITY_ALREADY_EXISTS_USER = _e("EntityAlreadyExists.User", 409, "The user does already EXIST.")
DELETE_CONFLICT_USER_ACCESS_KEY = _e(
    "DeleteConflict.User.AccessKey",
    409,
    "The user CAN NOT has any access key while deleting the user.",
)
DELETE_CONFLICT_USER_GROUP = _e(
    "DeleteConflict.User.Group", 409, "The user CAN NOT be in any group while deleting the user."
)
DELETE_CONFLICT_USER_POLICY = _e(
    "DeleteConflict.User.Policy",
    409,
    "The user CAN NOT has any attached policy while deleting the user.",
)
LIMIT_EXCEEDED_USER_ACCESS_KEY = _e(
    "LimitExceeded.User.AccessKey",
    409,
    "The access key count of the user access keys beyond the current limits.",
)
ENTITY_NOT_EXIST_ACCESS_KEY = _e(
    "EntityNotExist.User.AccessKey", 404, "The user access key does not exist."
)
ENTITY_NOT_EXIST_POLICY = _e("EntityNotExist.Policy", 404, "The policy does not exist.")
# Alibaba's documents print "group" here (a slip of theirs); the policy is meant.
ENTITY_ALREADY_EXISTS_POLICY = _e(
    "EntityAlreadyExists.Policy", 409, "The policy does already EXIST."
)
LIMIT_EXCEEDED_POLICY_VERSION = _e(
    "LimitExceeded.Policy.Version", 409, "The count of policy version beyond the current limits."
)
DELETE_CONFLICT_POLICY_USER = _e(
    "DeleteConflict.Policy.User",
    409,
    "The policy CAN NOT been attached to any user while deleting the policy.",
)
DELETE_CONFLICT_POLICY_GROUP = _e(
    "DeleteConflict.Policy.Group",
    409,
    "The policy CAN NOT been attached to any group while deleting the policy.",
)
DELETE_CONFLICT_POLICY_VERSION = _e(
    "DeleteConflict.Policy.Version",
    409,
    "The policy CAN NOT has any version except the default version.",
)
INVALID_POLICY_TYPE = _e(
    "InvalidParameter.PolicyType", 400, 'The parameter - "PolicyType" is incorrect.'
)
ENTITY_NOT_EXIST_GROUP = _e("EntityNotExist.Group", 404, "The group does not exist.")
ENTITY_ALREADY_EXISTS_GROUP = _e("EntityAlreadyExists.Group", 409, "The group does already EXIST.")
ENTITY_ALREADY_EXISTS_USER_GROUP = _e(
    "EntityAlreadyExists.User.Group", 409, "The user has already joined the group."
)
ENTITY_NOT_EXIST_USER_GROUP = _e(
    "EntityNotExist.User.Group", 404, "The user has not joined the group."
)
LIMIT_EXCEEDED_USER_GROUP = _e(
    "LimitExceeded.User.Group",
    409,
    "The count of groups the target user joined beyond the current limits.",
)
ENTITY_ALREADY_EXISTS_USER_POLICY = _e(
    "EntityAlreadyExists.User.Policy", 409, "The user has already been attached this policy."
)
ENTITY_NOT_EXIST_USER_POLICY = _e(
    "EntityNotExist.User.Policy", 404, "The indicate policy of the user does not exist."
)
ENTITY_ALREADY_EXISTS_GROUP_POLICY = _e(
    "EntityAlreadyExists.Group.Policy", 409, "The group has already been attached this policy."
)
ENTITY_NOT_EXIST_GROUP_POLICY = _e(
    "EntityNotExist.Group.Policy",
    404,
    "The indicate policy attached to the group does not exist.",
)
INVALID_NAME_CHARS = _e(
    "InvalidParameter.{name}.InvalidChars", 400, 'The parameter - "{name}" contains invalid chars.'
)
INVALID_NAME_LENGTH = _e(
    "InvalidParameter.{name}.Length", 400, 'The parameter - "{name}" beyond the length limit.'
)
INVALID_FORMAT = _e(
    "InvalidParameter.{name}.Format", 400, 'The format of the parameter - "{name}" is incorrect.'
)
