"""Managed passwords at rest: envelope encryption (issue 12 item 4, docs/kms.md §7).

Each secret has its own data key (Fernet), stored sealed by the master key;
each password is sealed by its secret's data key. Reading the database alone
reveals nothing, and destroying a version's token destroys its password.
"""

from __future__ import annotations

from cryptography.fernet import Fernet

from rkvstore.crypto import SecretBox
from rkvstore.secret import Secret


def new_data_key(box: SecretBox) -> str:
    """A fresh data key, sealed by the master key (what the secret's row keeps)."""
    return box.seal(Secret(Fernet.generate_key().decode()))


def seal(box: SecretBox, data_key: str, password: Secret) -> str:
    return _fernet(box, data_key).encrypt(password.reveal().encode()).decode()


def open_sealed(box: SecretBox, data_key: str, token: str) -> Secret:
    return Secret(_fernet(box, data_key).decrypt(token.encode()).decode())


def _fernet(box: SecretBox, data_key: str) -> Fernet:
    return Fernet(box.open(data_key).reveal().encode())
