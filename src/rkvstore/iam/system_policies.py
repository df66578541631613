"""The one catalogue of system policies: present in every tenant, without a row.

Each product declares its own (``products/<product>/policies.py``), added
here when the product is imported, as its error codes are added to
``errors.CATALOGUE``. The kernel reads them by name for a RAM user's attached
``System`` policies (``iam.attached_policies``); the product that manages
policies lists, gets and attaches them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class SystemPolicies(Mapping[str, tuple[str, str]]):
    """Name -> (description, document), each name declared once."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[str, str]] = {}

    def add(self, name: str, description: str, document: str) -> str:
        if name in self._by_name:
            raise ValueError(f"system policy {name} declared twice")
        self._by_name[name] = (description, document)
        return name

    def __getitem__(self, name: str) -> tuple[str, str]:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


SYSTEM_POLICIES = SystemPolicies()
