"""``rkvstore demo``: a local instance with an account ``demo``, and the snippet that resets it."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rkvstore.bootstrap import ROOT_CREDENTIALS_FILE, RootKey
from rkvstore.client import RpcClient, RpcError
from rkvstore.secret import Secret
from rkvstore.services.context import Deps
from rkvstore.services.instance_nodes import random_password

DEMO_INSTANCE_NAME = "rkvstore-demo"
DEMO_ACCOUNT = "demo"
# The SDK the printed snippet uses: printed with it, not a dependency of rkvstore
# (the server never imports it, and it would bring its own stack to every install).
SDK_REQUIREMENT = "alibabacloud-r-kvstore20150101>=6.1"


def _root_key(deps: Deps, created: RootKey | None) -> tuple[str, Secret]:
    settings = deps.settings
    if created is not None:
        return created.created.access_key_id, created.created.access_key_secret
    if settings.bootstrap_access_key_id and settings.bootstrap_access_key_secret:
        return settings.bootstrap_access_key_id, Secret(settings.bootstrap_access_key_secret)
    stored = json.loads((settings.data_dir / ROOT_CREDENTIALS_FILE).read_text())
    return str(stored["AccessKeyId"]), Secret(str(stored["AccessKeySecret"]))


def _wait_normal(client: RpcClient, instance_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
        attribute: dict[str, Any] = body["Instances"]["DBInstanceAttribute"][0]
        if attribute["InstanceStatus"] != "Creating" or time.monotonic() > deadline:
            return attribute
        time.sleep(0.2)


def set_up_demo(deps: Deps, created: RootKey | None) -> None:
    settings = deps.settings
    endpoint = f"{settings.host}:{settings.port}"
    key_id, secret = _root_key(deps, created)
    with RpcClient(endpoint, key_id, secret) as client:
        found = client.call("DescribeInstances", {"SearchKey": DEMO_INSTANCE_NAME})
        existing = found["Instances"]["KVStoreInstance"]
        if existing:
            instance_id = existing[0]["InstanceId"]
        else:
            instance_id = client.call(
                "CreateInstance",
                {
                    "InstanceName": DEMO_INSTANCE_NAME,
                    "NodeType": "STAND_ALONE",
                    "RegionId": settings.region,
                },
            )["InstanceId"]
        attribute = _wait_normal(client, instance_id)
        password = random_password()
        try:
            client.call(
                "CreateAccount",
                {
                    "InstanceId": instance_id,
                    "AccountName": DEMO_ACCOUNT,
                    "AccountPassword": password,
                },
            )
        except RpcError as exc:
            if exc.code != "InvalidAccountName.Duplicate":
                raise
            client.call(
                "ResetAccountPassword",
                {
                    "InstanceId": instance_id,
                    "AccountName": DEMO_ACCOUNT,
                    "AccountPassword": password,
                },
            )
    port = attribute["Port"]
    # Straight to the terminal, never through logging.
    sys.stdout.write(
        f"""
rkvstore demo is running (Ctrl-C stops it).

  endpoint         {endpoint}   (region {settings.region})
  AccessKeyId      {key_id}
  AccessKeySecret  {secret.reveal()}
  instance         {instance_id} ({attribute["InstanceStatus"]})
  Redis            redis-cli -h 127.0.0.1 -p {port} --user {DEMO_ACCOUNT} --pass '{password.reveal()}' ping

Reset the demo account's password with the official SDK; install it first:

pip install '{SDK_REQUIREMENT}'

from alibabacloud_tea_openapi.models import Config
from alibabacloud_r_kvstore20150101.client import Client
from alibabacloud_r_kvstore20150101.models import ResetAccountPasswordRequest
client = Client(Config(access_key_id="{key_id}", access_key_secret="{secret.reveal()}", endpoint="{endpoint}", protocol="http", region_id="{settings.region}"))
client.reset_account_password(ResetAccountPasswordRequest(instance_id="{instance_id}", account_name="{DEMO_ACCOUNT}", account_password="New_pass_123"))

"""
    )
    sys.stdout.flush()
