"""The README states what the code does: its privilege table is the code's own."""

from __future__ import annotations

from pathlib import Path

from rkvstore.config import Settings
from rkvstore.domain.privileges import describe_rules_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_privilege_table_is_the_decided_mapping() -> None:
    assert describe_rules_markdown().strip() in README.read_text()


def test_readme_starts_with_the_two_set_up_commands() -> None:
    text = README.read_text()
    blocks = text.split("```sh\n")[1:3]
    commands = [block.split("\n```")[0].strip() for block in blocks]
    assert commands[0].endswith("pip install -e . && rkvstore demo")
    assert commands[1].endswith("pip install -e '.[test]' && python -m pytest")
    assert text.index("```sh") < text.index("## ")


def test_every_setting_is_documented() -> None:
    """Every bound and knob is a documented setting: the README's table names each one."""
    text = README.read_text()
    missing = [f for f in Settings.model_fields if f"`RKVSTORE_{f.upper()}`" not in text]
    assert missing == []
