"""A node line is in line only if its passwords are exactly the user's: current, and previous."""

from __future__ import annotations

import pytest

from rkvstore.engine.acl import DesiredUser
from rkvstore.engine.provider import acl_file_line
from rkvstore.engine.redis_engine import desired_user, rendering

CUR, PREV, STRAY = "a" * 64, "b" * 64, "c" * 64
RULES = "resetchannels -@all +get ~*"


def _user(previous: str | None = None) -> DesiredUser:
    return desired_user("app", CUR, "RoleReadOnly", "7.0", previous)


def _line(*hashes: str, rules: str = RULES) -> str:
    return " ".join(["user app on", *(f"#{h}" for h in hashes), rules])


@pytest.mark.parametrize(
    ("previous", "hashes", "in_line"),
    [
        (None, [CUR], True),
        (None, [CUR, STRAY], False),  # a password added by hand
        (None, [PREV], False),
        (PREV, [CUR, PREV], True),
        (PREV, [PREV, CUR], True),  # order does not matter
        (PREV, [CUR], False),  # the previous one missing
        (PREV, [PREV], False),
        (PREV, [CUR, PREV, STRAY], False),
        (PREV, [CUR, STRAY], False),
        (CUR, [CUR], True),  # a previous equal to the current one is one password
    ],
)
def test_rendering_accepts_exactly_the_users_passwords(
    previous: str | None, hashes: list[str], in_line: bool
) -> None:
    shown = rendering(_line(*hashes), _user(previous))
    assert shown == ("on " + RULES if in_line else None)


def test_rendering_refuses_nopass_and_another_users_line() -> None:
    assert rendering(_line(CUR, rules="nopass " + RULES), _user()) is None
    assert rendering("user other on #" + CUR + " " + RULES, _user()) is None


def test_both_passwords_are_set_and_written_current_first() -> None:
    user = _user(PREV)
    assert user.setuser_command()[:7] == [
        "ACL",
        "SETUSER",
        "app",
        "reset",
        "on",
        f"#{CUR}",
        f"#{PREV}",
    ]
    assert _user().setuser_command()[5:7] == [f"#{CUR}", *user.rules[:1]]
    assert acl_file_line(user).startswith(f"user app on #{CUR} #{PREV} ")
    assert acl_file_line(_user(CUR)).startswith(f"user app on #{CUR} {user.rules[0]}")
