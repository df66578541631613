"""Encryption of secrets at rest: AccessKey secrets, Redis management passwords.

Reading the database alone never reveals a secret: each is a Fernet token
whose key lives outside the database (a 0600 key file in the data dir, or
``RKVSTORE_MASTER_KEY``).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from rkvstore.secret import Secret

KEY_FILE_NAME = "master.key"
# Tokens opened once per process are kept opened: a request would otherwise
# decrypt its instance's management password (and its AccessKey's secret)
# anew each time. A token never changes meaning, so the cache is never stale;
# it holds what the process already holds in memory while it works.
OPENED_KEPT = 4096


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._open_text = functools.lru_cache(maxsize=OPENED_KEPT)(self._decrypt)

    def __repr__(self) -> str:
        return "SecretBox(******)"

    def seal(self, secret: Secret) -> str:
        return self._fernet.encrypt(secret.reveal().encode()).decode()

    def open(self, token: str) -> Secret:
        return Secret(self._open_text(token))

    def _decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "a stored secret cannot be decrypted: is this the data dir's master key?"
            ) from exc


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def load_secret_box(data_dir: Path, master_key: str | None) -> SecretBox:
    if master_key:
        return SecretBox(master_key.encode())
    path = data_dir / KEY_FILE_NAME
    try:  # O_EXCL: of two processes starting on a fresh data dir, one key wins
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, Fernet.generate_key())
        finally:
            os.close(fd)
    for _attempt in range(100):  # the winner may not have written it yet
        key = path.read_bytes().strip()
        if key:
            return SecretBox(key)
        time.sleep(0.05)
    raise RuntimeError(f"{path} is empty")
