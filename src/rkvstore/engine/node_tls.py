"""How rkvstore reaches a registered deployment's nodes over TLS (issue 13).

The settings come with ``RegisterInstance`` as PEM text, not file paths: the
operator's files are on the operator's machine, not necessarily on rkvstore's,
and PEM in the database (sealed as one token, like the admin password) moves
with it to every process. The client key is a ``Secret``; Python's ``ssl`` loads
a certificate chain from files only, so it is written for the moment of loading
to a private temporary directory (0700, in memory where ``/dev/shm`` exists) and
removed at once. The context is built once per settings and shared by every
connection (``SSLContext`` is safe to share between threads).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rkvstore.secret import Secret

_SHM = Path("/dev/shm")  # noqa: S108 (a private 0700 directory is made inside)


class TlsSettingsError(ValueError):
    """A TLS setting cannot be used: which parameter and why (never its value)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


@dataclass(frozen=True, eq=False)
class NodeTls:
    ca: str  # PEM: the certificates that may have signed the nodes' certificates
    cert: str | None = None  # PEM: rkvstore's client certificate (chain), if the nodes ask
    key: Secret | None = None  # PEM: its private key
    server_name: str | None = None  # the name the nodes' certificate holds; None: their address
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _context: list[ssl.SSLContext] = field(default_factory=list, repr=False)

    def context(self) -> ssl.SSLContext:
        """The client context (built on first use; ``TlsSettingsError`` if it cannot be)."""
        with self._lock:
            if not self._context:
                self._context.append(_build(self))
            return self._context[0]

    def sealed_form(self) -> str:
        """JSON of every setting, the key revealed: only ever handed to ``SecretBox.seal``."""
        return json.dumps(
            {
                "ca": self.ca,
                "cert": self.cert,
                "key": None if self.key is None else self.key.reveal(),
                "server_name": self.server_name,
            }
        )

    @classmethod
    def from_sealed_form(cls, text: str) -> NodeTls:
        data = json.loads(text)
        key = data.get("key")
        return cls(
            ca=str(data["ca"]),
            cert=data.get("cert"),
            key=None if key is None else Secret(str(key)),
            server_name=data.get("server_name"),
        )


def _build(tls: NodeTls) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cadata=tls.ca)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsSettingsError("TlsCaCertificate", "not a PEM certificate bundle") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None or tls.key is not None:
        if tls.cert is None or tls.key is None:
            raise TlsSettingsError(
                "TlsClientCertificate", "TlsClientCertificate and TlsClientKey go together"
            )
        _load_chain(context, tls.cert, tls.key)
    return context


def _load_chain(context: ssl.SSLContext, cert: str, key: Secret) -> None:
    where = str(_SHM) if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="rkvstore-tls-", dir=where) as private:
        cert_path, key_path = Path(private) / "cert.pem", Path(private) / "key.pem"
        cert_path.write_text(cert, encoding="utf-8")
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(key.reveal())
        try:
            # A password callback, so that an encrypted key never makes OpenSSL
            # prompt on the terminal (a server with one would hang there).
            context.load_cert_chain(str(cert_path), str(key_path), password=_encrypted_key)
        except TlsSettingsError:
            raise
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsSettingsError(
                "TlsClientKey", "the certificate and key are not a PEM pair"
            ) from exc


def _encrypted_key() -> bytes:
    """Asked for by OpenSSL only when the key is encrypted: rkvstore holds no passphrase."""
    raise TlsSettingsError("TlsClientKey", "the key is encrypted: give it without a passphrase")


def tls_reason(message: str) -> str:
    """What a failed handshake's error says, without the noise (``[SSL: …] reason``)."""
    found = re.search(r"\[SSL: [A-Z_]+\] ([^(]+)", message)
    if found:
        return found.group(1).strip().rstrip(".")
    found = re.search(r"\[SSL: ([A-Z_]+)\]", message)
    return found.group(1).lower().replace("_", " ") if found else "no TLS answer"


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate unchecked: this
    only tells a TLS-only port, asked in plain text, from one out of reach)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw) as secured,
        ):
            return secured.version() is not None
    except ssl.SSLError as exc:
        return "ALERT" in str(exc)  # the peer spoke TLS: it refused this client's handshake
    except (OSError, ValueError):
        return False
