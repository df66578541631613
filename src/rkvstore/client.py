"""A small V3-signing client: what ``rkvstore call``, the tests and the benchmarks use."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from rkvstore.api.signing import pct, sign_v3_headers
from rkvstore.config import API_VERSION
from rkvstore.secret import Secret


def normalise_endpoint(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"http://{endpoint}"


class RpcClient:
    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        access_key_secret: Secret,
        *,
        version: str = API_VERSION,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.endpoint = normalise_endpoint(endpoint).rstrip("/")
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.version = version
        self._http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, action: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """Send one signed call; the raw HTTP answer, error or not."""
        query = [(k, _wire(v)) for k, v in (params or {}).items() if v is not None]
        headers = sign_v3_headers(
            access_key_id=self.access_key_id,
            secret=self._secret.reveal(),
            method="POST",
            host=urlsplit(self.endpoint).netloc,
            query=query,
            headers={
                "accept": "application/json",
                "x-acs-action": action,
                "x-acs-version": self.version,
                "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "x-acs-signature-nonce": secrets.token_hex(16),
            },
        )
        qs = urlencode(query, quote_via=lambda s, *_a: pct(str(s)))
        return self._http.post(f"{self.endpoint}/?{qs}", headers=headers)

    def call(self, action: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The decoded answer; raises ``RpcError`` on an error answer."""
        response = self.request(action, params)
        body: dict[str, Any] = json.loads(response.content)
        if response.status_code >= 300:
            raise RpcError(response.status_code, body)
        return body


class RpcError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.code = str(body.get("Code", ""))
        self.message = str(body.get("Message", ""))
        super().__init__(f"{status} {self.code}: {self.message}")


def _wire(value: Any) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
