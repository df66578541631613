"""The command line: ``serve`` the API, ``call`` it."""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from rkvstore.cli_secrets import secrets_group
from rkvstore.config import API_VERSION, Settings
from rkvstore.secret import SECRET_PARAMETERS, Secret

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_UNSAFE_IN_LOGS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class EscapingFormatter(logging.Formatter):
    """One record, one line: a control character in a message (a value that came
    with a request, say) is written escaped, so that no value can forge a line.
    A traceback, appended after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _UNSAFE_IN_LOGS.sub(_escape_char, super().formatMessage(record))


def _escape_char(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def setup_logging(settings: Settings, level: str = "INFO", *, with_pid: bool = False) -> None:
    """stderr and the log file; ``with_pid``: each line names its process (``--workers``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = " pid=%(process)d" if with_pid else ""
    fmt = EscapingFormatter(f"%(asctime)s %(levelname)s %(name)s{pid} %(message)s")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(settings.effective_log_file, encoding="utf-8"),
    ]
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)
    # A log file that cannot be written (a full disk) must not print a
    # traceback per record on stderr: the record is dropped.
    logging.raiseExceptions = False
    # rkvstore writes its own access-log line for a request that is not HTTP.
    logging.getLogger("uvicorn.error").addFilter(_NotHttpFilter())
    # httpx (the demo's and the CLI's client) logs each request's URL at INFO: the
    # query string, where a password parameter may be. Only its warnings are wanted.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class _NotHttpFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


def _settings(**options: Any) -> Settings:
    """CLI options that were given, over ``RKVSTORE_*`` variables, over defaults."""
    return Settings(**{k: v for k, v in options.items() if v is not None})


@click.group()
@click.version_option(package_name="rkvstore")
def main() -> None:
    """rkvstore: a self-hosted control plane for Redis accounts (R-kvstore OpenAPI)."""


def _server_options(func: Any) -> Any:
    options = [
        click.option("--host", help="Address to listen on [127.0.0.1; RKVSTORE_HOST]."),
        click.option("--port", type=int, help="Port to listen on [8080; RKVSTORE_PORT]."),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Where the database, keys, logs and Redis nodes live "
            "[./rkvstore-data; RKVSTORE_DATA_DIR].",
        ),
        click.option(
            "--database-url",
            help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
            "[SQLite in the data dir; RKVSTORE_DATABASE_URL].",
        ),
        click.option("--region", help="The deployment's region [cn-hangzhou; RKVSTORE_REGION]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@_server_options
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Request worker processes on the one port; one of them supervises the local "
    "nodes [1; RKVSTORE_WORKERS].",
)
@click.option(
    "--tls-certfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Serve HTTPS with this PEM certificate (chain); with --tls-keyfile "
    "[plain HTTP; RKVSTORE_TLS_CERTFILE].",
)
@click.option(
    "--tls-keyfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The certificate's unencrypted PEM private key [RKVSTORE_TLS_KEYFILE].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics at GET /metrics on this port, a listener of its own "
    "[off; RKVSTORE_METRICS_PORT].",
)
@click.option("--log-level", default="INFO", show_default=True)
def serve(log_level: str, **options: Any) -> None:
    """Run the API server until SIGINT or SIGTERM."""
    os.umask(0o077)  # everything under the data dir is the operator's alone
    settings = _settings(**options)
    _check_tls(settings)
    if settings.workers == 1:
        from rkvstore.serving import run_server

        setup_logging(settings, log_level)
        run_server(settings, metrics_listener=_metrics_listener(settings))
        return
    _serve_workers(settings, log_level)


def _listen(host: str, port: int, backlog: int) -> Any:
    from rkvstore.workers import listen

    try:
        return listen(host, port, backlog)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _metrics_listener(settings: Settings) -> Any:
    """The socket ``/metrics`` is served on, bound now (None: no metrics port)."""
    from rkvstore.serving import metrics_address

    address = metrics_address(settings)
    return None if address is None else _listen(*address, 64)


def use_multiprocess_dir(path: Path) -> None:
    """prometheus_client's multiprocess mode, counting in files under ``path`` (emptied):
    set before prometheus_client is first imported (it chooses then), in the parent of
    ``--workers N``, whose forks then count in the one directory (rkvstore.metrics)."""
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_VARIABLE):
        raise RuntimeError("prometheus_client was imported before its multiprocess directory")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in path.glob("*.db"):  # a previous run's counts are not this run's
        stale.unlink()
    os.environ[MULTIPROC_VARIABLE] = str(path)


def _check_tls(settings: Settings) -> None:
    """Bad TLS settings stop the start with one line, before anything is set up."""
    from rkvstore.serving import TlsSetupError, tls_context

    try:
        tls_context(settings)
    except TlsSetupError as exc:
        raise click.ClickException(str(exc)) from None


def _serve_workers(settings: Settings, log_level: str) -> None:
    if settings.metrics_port is not None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        use_multiprocess_dir(settings.data_dir / "metrics")  # before anything imports it
    from rkvstore.api.http_guard import LISTEN_BACKLOG
    from rkvstore.serving import run_worker
    from rkvstore.workers import Parent, prepare_once

    setup_logging(settings, log_level, with_pid=True)

    def prepare() -> None:
        from rkvstore.bootstrap import build_deps, close_deps, ensure_root_tenant

        deps = build_deps(settings)  # the master key, migrations
        try:
            ensure_root_tenant(deps)
        finally:
            close_deps(deps)

    prepare_once(prepare)
    listener = _listen(settings.host, settings.port, LISTEN_BACKLOG)
    metrics_listener = _metrics_listener(settings)

    def worker(sock: Any, stopping: Any) -> None:
        setup_logging(settings, log_level, with_pid=True)  # handlers of its own
        run_worker(settings, sock, stopping, metrics_listener)

    sys.exit(Parent(settings, listener, worker).run())


@main.command()
@_server_options
# INFO, as serve: the access log shows each request the SDK snippet makes.
@click.option("--log-level", default="INFO", show_default=True)
def demo(log_level: str, **options: Any) -> None:
    """Serve, create a local instance with an account "demo", and print how to reset it."""
    from rkvstore.demo import set_up_demo
    from rkvstore.serving import run_server

    os.umask(0o077)
    settings = _settings(**options)
    _check_tls(settings)
    setup_logging(settings, log_level)
    run_server(settings, on_ready=set_up_demo, metrics_listener=_metrics_listener(settings))


def _on_command_line(option: str, file_option: str, variable: str | None = None) -> str:
    ways = [f"'{option} -' to be asked for it (or to read it from stdin)", f"'{file_option}'"]
    if variable:
        ways.insert(0, f"the environment variable {variable}")
    return (
        f"{option} takes no secret on the command line, where any user of this machine "
        f"can read it (ps, /proc); give it with {', '.join(ways[:-1])} or {ways[-1]}"
    )


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise click.UsageError(f"cannot read {path}: {exc.strerror}") from None


def _secret_key_options(func: Any) -> Any:
    """``--access-key-secret`` (only "-", or from ALIBABA_CLOUD_ACCESS_KEY_SECRET) and
    ``--access-key-secret-file``; the command gets ``access_key_secret`` as a ``Secret``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        value = kwargs.pop("access_key_secret")
        path = kwargs.pop("access_key_secret_file")
        source = ctx.get_parameter_source("access_key_secret")
        if value is not None and value != "-" and source == ParameterSource.COMMANDLINE:
            raise click.UsageError(
                _on_command_line(
                    "--access-key-secret",
                    "--access-key-secret-file PATH",
                    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                )
            )
        if path is not None:
            value = _read_secret_file(path)
        elif value == "-":
            value = _read_secret("AccessKeySecret")
        if not value:
            raise click.UsageError(
                "no AccessKey secret: set ALIBABA_CLOUD_ACCESS_KEY_SECRET, or give "
                "--access-key-secret-file PATH or '--access-key-secret -'"
            )
        return func(*args, access_key_secret=Secret(value), **kwargs)

    wrapper = click.option(
        "--access-key-secret-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A file holding the AccessKey secret.",
    )(wrapper)
    return click.option(
        "--access-key-secret",
        envvar="ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        help="From ALIBABA_CLOUD_ACCESS_KEY_SECRET, or '-' to be asked (never the secret itself).",
    )(wrapper)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("action")
@click.option(
    "--endpoint",
    envvar="RKVSTORE_ENDPOINT",
    default="http://127.0.0.1:8080",
    show_default=True,
)
@click.option("--access-key-id", envvar="ALIBABA_CLOUD_ACCESS_KEY_ID", required=True)
@_secret_key_options
@click.option("--api-version", default=API_VERSION, show_default=True)
@click.pass_context
def call(
    ctx: click.Context,
    action: str,
    endpoint: str,
    access_key_id: str,
    access_key_secret: Secret,
    api_version: str,
) -> None:
    """Call ACTION with --Param value pairs, signed with V3; print the JSON answer.

    A secret parameter (e.g. AccountPassword) is never given on the command
    line, where every user of the machine can read it: give it as "-" to be
    asked for it (or to read it from stdin), or name a file with
    --AccountPassword-file PATH.
    """
    from rkvstore.client import RpcClient

    params = _parse_call_params(ctx.args)
    with RpcClient(endpoint, access_key_id, access_key_secret, version=api_version) as c:
        response = c.request(action, params)
    try:
        body = json.loads(response.content)
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(response.text)
    if response.status_code >= 300:
        sys.exit(1)


def _parse_call_params(args: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--") or len(arg) < 3:
            raise click.UsageError(f"expected --Param value, got {arg!r}")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            try:
                value = next(it)
            except StopIteration:
                raise click.UsageError(f"--{name} needs a value") from None
        secret_file = name.removesuffix("-file")
        if name.endswith("-file") and secret_file in SECRET_PARAMETERS:
            params[secret_file] = Secret(_read_secret_file(Path(value)))
            continue
        if name in SECRET_PARAMETERS:
            if value != "-":
                raise click.UsageError(_on_command_line(f"--{name}", f"--{name}-file PATH"))
            value = _read_secret(name)
        params[name] = Secret(value) if name in SECRET_PARAMETERS else value
    return params


def _read_secret(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{name}: ")
    return sys.stdin.readline().rstrip("\r\n")


# --------------------------------------------------------------------------- operator commands


@main.group()
def tenants() -> None:
    """Tenants (operator commands on the server's database)."""


@tenants.command("create")
@click.argument("name")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--database-url")
@click.option(
    "--json", "as_json", is_flag=True, help="Print AccountId, AccessKeyId, AccessKeySecret."
)
def tenants_create(
    name: str, data_dir: Path | None, database_url: str | None, as_json: bool
) -> None:
    """Create tenant NAME and print its root AccessKey (once: it is stored encrypted)."""
    from sqlalchemy.exc import IntegrityError

    from rkvstore.bootstrap import open_database, prepare_data_dir
    from rkvstore.crypto import load_secret_box
    from rkvstore.iam.credentials import create_tenant

    os.umask(0o077)
    settings = _settings(data_dir=data_dir, database_url=database_url)
    prepare_data_dir(settings)
    box = load_secret_box(settings.data_dir, settings.master_key)
    engine = open_database(settings)
    try:
        with engine.begin() as conn:
            tenant = create_tenant(conn, box, name)
    except IntegrityError:
        raise click.ClickException(f"a tenant named {name!r} exists already") from None
    finally:
        engine.dispose()
    secret = tenant.access_key_secret.reveal()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "AccountId": tenant.account_id,
                    "AccessKeyId": tenant.access_key_id,
                    "AccessKeySecret": secret,
                }
            )
        )
    else:
        click.echo(
            f"tenant {name}: AccountId {tenant.account_id}\n"
            f"  AccessKeyId:     {tenant.access_key_id}\n"
            f"  AccessKeySecret: {secret}"
        )


# --------------------------------------------------------------------------- RAM, day to day


def _client_options(func: Any) -> Any:
    options = [
        click.option(
            "--endpoint",
            envvar="RKVSTORE_ENDPOINT",
            default="http://127.0.0.1:8080",
            show_default=True,
        ),
        click.option("--access-key-id", envvar="ALIBABA_CLOUD_ACCESS_KEY_ID", required=True),
        _secret_key_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _ram_client(endpoint: str, access_key_id: str, access_key_secret: Secret) -> Any:
    from rkvstore.client import RpcClient

    return RpcClient(endpoint, access_key_id, access_key_secret, version="2015-05-01")


def _ram_call(client: Any, action: str, params: dict[str, Any]) -> dict[str, Any]:
    from rkvstore.client import RpcError

    try:
        body: dict[str, Any] = client.call(action, params)
    except RpcError as exc:
        raise click.ClickException(f"{action}: {exc.code}: {exc.message}") from None
    return body


@main.group()
def ram() -> None:
    """Users, keys and policies (through the RAM API, with your AccessKey)."""


@ram.command("create-user")
@click.argument("user_name")
@click.option("--display-name")
@click.option("--with-key", is_flag=True, help="Also create an AccessKey and print it (once).")
@_client_options
def ram_create_user(
    user_name: str, display_name: str | None, with_key: bool, **client: Any
) -> None:
    """Create a RAM user, optionally with an AccessKey."""
    with _ram_client(**client) as c:
        user = _ram_call(c, "CreateUser", {"UserName": user_name, "DisplayName": display_name})
        out: dict[str, Any] = {"User": user["User"]}
        if with_key:
            out["AccessKey"] = _ram_call(c, "CreateAccessKey", {"UserName": user_name})["AccessKey"]
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@ram.command("attach-policy")
@click.argument("user_name")
@click.option("--policy-name", required=True)
@click.option(
    "--file",
    "document_file",
    type=click.File("r"),
    help="A policy document (JSON): creates the custom policy first.",
)
@click.option(
    "--system", is_flag=True, help="Attach a system policy (e.g. AliyunKvstoreFullAccess)."
)
@_client_options
def ram_attach_policy(
    user_name: str, policy_name: str, document_file: Any, system: bool, **client: Any
) -> None:
    """Attach a policy to a user; with --file, create it from a JSON document first."""
    with _ram_client(**client) as c:
        if document_file is not None:
            _ram_call(
                c,
                "CreatePolicy",
                {"PolicyName": policy_name, "PolicyDocument": document_file.read()},
            )
        _ram_call(
            c,
            "AttachPolicyToUser",
            {
                "UserName": user_name,
                "PolicyName": policy_name,
                "PolicyType": "System" if system else "Custom",
            },
        )
    click.echo(f"attached {policy_name} to {user_name}")


@ram.command("who-can")
@click.option("--user", "only_user", help="Only this user.")
@_client_options
def ram_who_can(only_user: str | None, **client: Any) -> None:
    """List each user's effective statements: direct and through groups."""
    with _ram_client(**client) as c:
        users = (
            [only_user]
            if only_user
            else [
                u["UserName"]
                for u in _ram_call(c, "ListUsers", {"MaxItems": 1000})["Users"]["User"]
            ]
        )
        for user in users:
            listed = _ram_call(c, "ListPoliciesForUser", {"UserName": user})
            sources = [("user", p) for p in listed["Policies"]["Policy"]]
            groups = _ram_call(c, "ListGroupsForUser", {"UserName": user})["Groups"]["Group"]
            for group in groups:
                name = group["GroupName"]
                listed = _ram_call(c, "ListPoliciesForGroup", {"GroupName": name})
                sources += [(f"group {name}", p) for p in listed["Policies"]["Policy"]]
            click.echo(f"{user}:")
            for via, policy in sources:
                wanted = {"PolicyName": policy["PolicyName"], "PolicyType": policy["PolicyType"]}
                got = _ram_call(c, "GetPolicy", wanted)
                document = got["DefaultPolicyVersion"]["PolicyDocument"]
                origin = f"[{policy['PolicyType']} {policy['PolicyName']}, via {via}]"
                for statement in _statements(document):
                    click.echo(f"  {statement}   {origin}")


def _statements(document: str) -> list[str]:
    from rkvstore.iam.policy import parse_policy

    lines = []
    for st in parse_policy(document).statements:
        actions = ", ".join(st.actions) or "NOT " + ", ".join(st.not_actions)
        resources = ", ".join(st.resources) or "NOT " + ", ".join(st.not_resources)
        condition = (
            " if " + "; ".join(f"{c.operator} {c.key} {list(c.values)}" for c in st.conditions)
            if st.conditions
            else ""
        )
        lines.append(f"{st.effect:5s} {actions} on {resources}{condition}")
    return lines


@main.group()
def instances() -> None:
    """Operator tasks on instances (through the API, with your AccessKey)."""


@instances.command("rotate-management-password")
@click.argument("instance_id")
@_client_options
def instances_rotate(instance_id: str, **client: Any) -> None:
    """Give rkvstore's management user (and replication) a new password on every node."""
    from rkvstore.client import RpcClient, RpcError

    endpoint, key_id, secret = (
        client["endpoint"],
        client["access_key_id"],
        client["access_key_secret"],
    )
    with RpcClient(endpoint, key_id, secret) as c:
        try:
            c.call("RotateManagementPassword", {"InstanceId": instance_id})
        except RpcError as exc:
            raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"management password of {instance_id} rotated")


@main.command()
@click.option("--start", help="From this UTC time, YYYY-MM-DDThh:mm:ssZ (default: 7 days ago).")
@click.option("--end", help="Up to this UTC time, YYYY-MM-DDThh:mm:ssZ (default: now).")
@click.option("--event-name", help="Only this action (e.g. ResetAccountPassword).")
@click.option("--user", help="Only this principal (a RAM user's name, or root).")
@click.option("--resource", help="Only this resource (r-…, r-…/account, a secret, a user).")
@click.option("--resource-type", help="Only this type (e.g. ACS::Redis::Account).")
@click.option("--service", help="Only this service (R-kvstore, Ram, Kms, Actiontrail).")
@click.option("--access-key", help="Only calls signed with this AccessKeyId.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON event a line (for a SIEM).")
@_client_options
def audit(
    start: str | None,
    end: str | None,
    limit: int,
    as_json: bool,
    endpoint: str,
    access_key_id: str,
    access_key_secret: Secret,
    **filters: str | None,
) -> None:
    """Who did what, when: your tenant's audit events (LookupEvents), newest first."""
    from rkvstore import audit_cli
    from rkvstore.client import RpcClient, RpcError

    params = audit_cli.lookup_params(start, end, filters)
    with RpcClient(endpoint, access_key_id, access_key_secret, version=audit_cli.VERSION) as c:
        try:
            found = list(audit_cli.events(c, params, limit))
        except RpcError as exc:
            raise click.ClickException(f"LookupEvents: {exc.code}: {exc.message}") from None
    lines = [audit_cli.json_line(e) for e in found] if as_json else audit_cli.table(found)
    for line in lines:
        click.echo(line)


main.add_command(secrets_group(_client_options))


if __name__ == "__main__":  # pragma: no cover
    main()
