"""``CLIENT LIST`` as a registered node answers it: what it cannot parse is no 500."""

from __future__ import annotations

from rkvstore.engine.sessions import Session, parse_client_list


def test_a_well_formed_line_is_read() -> None:
    reply = "id=3 addr=10.0.0.1:5000 name=web age=12 idle=3 user=app\n"
    assert parse_client_list(reply, "app") == [Session("10.0.0.1:5000", 12, 3, "web")]


def test_malformed_counts_read_as_zero() -> None:
    reply = "\n".join(
        [
            "id=3 addr=10.0.0.1:5000 age=abc idle=-1 user=app",
            "id=4 addr=10.0.0.1:5001 age=١٢ idle= user=app",  # Arabic-Indic digits
            f"id=5 addr=10.0.0.1:5002 age={'9' * 5000} idle=1.5 user=app",
            "id=6 addr=10.0.0.1:5003 age idle user=app",
            "id=7 addr=10.0.0.1:5004 age=7 idle=2 user=other",
        ]
    )
    assert parse_client_list(reply, "app") == [
        Session("10.0.0.1:5000", 0, 0, ""),
        Session("10.0.0.1:5001", 0, 0, ""),
        Session("10.0.0.1:5002", 0, 0, ""),
        Session("10.0.0.1:5003", 0, 0, ""),
    ]
