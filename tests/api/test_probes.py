"""What operators probe: /metrics (through prometheus_client's own parser), /healthz,
/readyz, and the access log's one line per request."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_tea_openapi.exceptions import ClientException

from rkvstore.api.dispatch import logged
from rkvstore.errors import CATALOGUE
from rkvstore.metrics import OTHER, SUCCESS
from rkvstore.products import all_actions
from tests.api.sdk_clients import new_sdk_client
from tests.conftest import ARTIFACT_DIRS, LiveServer, free_port, remember_secret, start_server
from tests.scrape import scrape, value

NOT_FOUND = ("InvalidInstanceId.NotFound", "The specified instance is not found.")
MISSING_SIGNATURE = "The request signature does not conform to Aliyun standards."
# One access-log line: key=value fields, a value bare or a JSON string.
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)')
ACCESS_KEYS = ["request_id", "action", "principal", "status", "code", "duration_ms"]


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """One server with a metrics listener; and the metrics URL."""
    path = tmp_path_factory.mktemp("metered")
    ARTIFACT_DIRS.append(path)
    port = free_port()
    server = start_server(path, args=["--metrics-port", str(port)])
    try:
        yield server, f"http://127.0.0.1:{port}/metrics"
    finally:
        server.stop()


def test_metrics_parse_and_count_the_sdk_calls(metered: tuple[LiveServer, str]) -> None:
    server, url = metered
    before = scrape(url)
    client = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
    for _ in range(2):
        client.describe_regions(kv_models.DescribeRegionsRequest())
    with pytest.raises(ClientException) as caught:
        client.describe_instance_attribute(
            kv_models.DescribeInstanceAttributeRequest(instance_id="r-madeup0000000000")
        )
    assert (caught.value.code, caught.value.data["Message"]) == NOT_FOUND
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("rkvstore_requests_total", action="DescribeRegions", code=SUCCESS) == 2
    assert moved("rkvstore_request_duration_seconds_count", action="DescribeRegions") == 2
    attribute = {"action": "DescribeInstanceAttribute", "code": NOT_FOUND[0]}
    assert moved("rkvstore_requests_total", **attribute) == 1
    assert value(after, "rkvstore_database_up") == 1
    for name in (
        "rkvstore_task_slot_waits_total",
        "rkvstore_node_change_failures_total",
        "rkvstore_reconcile_repairs_total",
        "rkvstore_unreachable_nodes",
        "rkvstore_kms_secrets_due",
    ):
        assert any(key[0] == name for key in after), name
    assert httpx.get(url.replace("/metrics", "/"), timeout=10).status_code == 404


def test_no_label_holds_a_secret_or_an_unknown_value(metered: tuple[LiveServer, str]) -> None:
    server, url = metered
    password = remember_secret("Pw1_" + "labelsecret")
    # The secret where a label would come from: as the action's name, unsigned and
    # signed (a made-up action), and as a parameter of a real one.
    httpx.get(f"{server.url}/", params={"Action": server.access_key_secret}, timeout=10)
    client = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
    with pytest.raises(ClientException):
        client.reset_account_password(
            kv_models.ResetAccountPasswordRequest(
                instance_id="r-madeup0000000000", account_name="a", account_password=password
            )
        )
    text = httpx.get(url, timeout=10).text
    assert server.access_key_secret not in text
    assert password not in text
    actions = {spec.name for spec in all_actions()} | {OTHER}
    codes = set(CATALOGUE.by_code) | {SUCCESS, OTHER, "ClientDisconnect", "RequestTimeout"}
    samples = scrape(url)
    labels = {key: dict(pairs) for key, pairs in ((k[0], k[1]) for k in samples)}
    for _name, pairs in samples:
        found = dict(pairs)
        assert found.get("action", OTHER) in actions, found
        assert found.get("code", OTHER) in codes, found
        assert set(found) <= {"action", "code", "result", "le"}, found
    assert labels  # something was scraped
    assert value(samples, "rkvstore_requests_total", action=OTHER, code="MissingSignature") >= 1


def test_health_answers_without_authentication_or_tenant_data(
    metered: tuple[LiveServer, str],
) -> None:
    server, _ = metered
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/json"
    assert ready.json() == {
        "status": "ready",
        "database": "ok",
        "migrations": "ok",
        "reconciler": "ok",
    }
    assert server.access_key_id not in ready.text
    # Any other path is still the API's, answered in its own format.
    other = httpx.get(f"{server.url}/health", timeout=10).json()
    assert other["Code"] == "InvalidAction.NotFound"


def access_lines(data_dir: Path) -> list[dict[str, str]]:
    """Every access-log line, parsed; each must be nothing but its six fields."""
    parsed = []
    for line in (data_dir / "rkvstore.log").read_text().splitlines():
        if " rkvstore.access " not in line:
            continue
        rest = line.split(" rkvstore.access ", 1)[1]
        fields = FIELD.findall(rest)
        assert " ".join(f"{k}={v}" for k, v in fields) == rest, line
        assert [k for k, _ in fields] == ACCESS_KEYS, line
        parsed.append({k: json.loads(v) if v.startswith('"') else v for k, v in fields})
    return parsed


def test_a_forged_parameter_stays_inside_its_field(metered: tuple[LiveServer, str]) -> None:
    server, _ = metered
    forged = 'x" request_id=FORGED principal=root:1/root status=200\n\u2028code=- "'
    response = httpx.post(f"{server.url}/", params={"Action": forged}, timeout=10)
    assert response.json()["Message"] == MISSING_SIGNATURE
    request_id = response.json()["RequestId"]
    deadline = time.monotonic() + 10
    while True:
        lines = access_lines(server.data_dir)
        mine = [line for line in lines if line["request_id"] == request_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(mine) == 1
    # Non-printable characters became "?" (api/params.py), the rest is quoted whole.
    assert mine[0]["action"] == forged.replace("\n", "?").replace("\u2028", "?")
    assert mine[0]["principal"] == "-"
    assert not any(line["request_id"] == "FORGED" for line in lines)


def test_logged_quotes_anything_but_plain_tokens() -> None:
    assert logged("DescribeRegions") == "DescribeRegions"
    assert logged("root:1234567890123456/ops.admin@corp") == "root:1234567890123456/ops.admin@corp"
    assert logged("a b") == '"a b"'
    assert logged('a"\\\n\u2028') == '"a\\"\\\\\\n\\u2028"'
    assert logged("") == '""'


def test_a_metrics_port_in_use_stops_the_start_with_one_line(
    metered: tuple[LiveServer, str], tmp_path: Path
) -> None:
    _, url = metered
    taken = url.split(":")[2].split("/")[0]  # the running server's metrics port
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKVSTORE_")}
    command = [sys.executable, "-m", "rkvstore.cli", "serve", "--port", str(free_port())]
    done = subprocess.run(
        [*command, "--metrics-port", taken, "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{taken}: Address already in use"
    )
