"""The README's first command: ``rkvstore demo`` prints a snippet that really resets a password."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import redis
from packaging.requirements import Requirement

from rkvstore.demo import SDK_REQUIREMENT
from tests.conftest import ARTIFACT_DIRS, free_port, remember_secret

# What a request's access-log line says, as the demo writes it (like serve).
ACCESS = re.compile(
    r" INFO rkvstore\.access request_id=\S+ action=(\S+) principal=(\S+) status=(\d+) "
)


def _wait_for(path: Path, marker: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        assert process.poll() is None, f"rkvstore demo exited early:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"no {marker!r} within {timeout} s")


def test_demo_snippet_resets_the_demo_account(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("demo")
    ARTIFACT_DIRS.append(data_dir)
    out = tmp_path_factory.mktemp("demo-out") / "stdout.txt"  # holds the printed key on purpose
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKVSTORE_")}
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rkvstore.cli",
                "demo",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        text = _wait_for(out, "client.reset_account_password(", process, timeout=90)
        secret = re.search(r"AccessKeySecret\s+(\S+)", text)
        assert secret is not None
        remember_secret(secret.group(1))
        redis_port = int(re.search(r"-p (\d+) --user demo", text).group(1))  # type: ignore[union-attr]
        snippet = [
            line
            for line in text.splitlines()
            if line.startswith(("from alibabacloud", "client = ", "client.reset_account_password"))
        ]
        assert len(snippet) == 5, snippet
        # The SDK is not rkvstore's dependency: the demo prints what to install, and
        # that installs every module the snippet imports.
        assert f"pip install '{SDK_REQUIREMENT}'" in text.splitlines()
        # ... the very requirement the test suite installs the SDK with.
        project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
        assert SDK_REQUIREMENT in project["project"]["optional-dependencies"]["test"]
        assert Requirement(SDK_REQUIREMENT).name not in str(project["project"]["dependencies"])
        provided = installs(Requirement(SDK_REQUIREMENT).name)
        for line in snippet:
            if line.startswith("from "):
                module = line.split()[1].split(".")[0]
                found = {normal(d) for d in metadata.packages_distributions()[module]}
                assert found & provided, module
        # No request line of the demo's own client, whose query holds the password.
        for where in (text, (data_dir / "rkvstore.log").read_text()):
            assert "AccountPassword=" not in where
        # The demo's own calls are in the access log, as serve writes them.
        logged = [m.groups() for m in ACCESS.finditer(text)]
        for action in ("DescribeInstances", "CreateInstance", "CreateAccount"):
            assert any(
                a == action and p.startswith("root:") and s == "200" for a, p, s in logged
            ), (action, logged)
        remember_secret("New_pass_123")
        exec("\n".join(snippet), {})  # noqa: S102 - the README's own snippet, run as a user would
        node = redis.Redis(port=redis_port, username="demo", password="New_pass_123")
        assert node.ping() is True
        node.close()
        # ... and so is the snippet's reset: one line.
        text = _wait_for(out, "action=ResetAccountPassword", process, timeout=30)
        resets = [m.groups() for m in ACCESS.finditer(text) if m[1] == "ResetAccountPassword"]
        assert len(resets) == 1 and resets[0][2] == "200", resets
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def installs(name: str) -> set[str]:
    """The distribution ``name`` and everything it requires, as installed (normalized)."""
    seen: set[str] = set()
    todo = [name]
    for _ in range(1000):  # bounded: a dependency tree
        if not todo:
            break
        current = normal(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        try:
            requires = metadata.requires(current) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [Requirement(r).name for r in requires if "extra ==" not in r]
    return seen


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
