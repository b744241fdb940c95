"""The examples in examples/ run, and the typed one covers every public name."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import tornsession
from support.browser import Browser
from support.processes import REPO
from support.servers import free_port, require_binary

EXAMPLES = REPO / "examples"


def test_multiprocess_example_shares_one_session_between_two_processes() -> None:
    require_binary("redis-server")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "multiprocess" / "run.py"), "--requests", "6"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hits = re.findall(r"port (\d+) \(pid (\d+)\): hits=(\d+)", result.stdout)
    assert [int(h) for _, _, h in hits] == [1, 2, 3, 4, 5, 6]
    assert len({port for port, _, _ in hits}) == 2 and len({pid for _, pid, _ in hits}) == 2
    assert "none lost" in result.stdout


def test_typed_app_uses_every_public_name() -> None:
    tree = ast.parse((EXAMPLES / "typed_app.py").read_text())
    used = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "tornsession"
        for alias in node.names
    } | {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "tornsession"
    }
    assert set(tornsession.__all__) - used == set()


def test_typed_app_runs() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "typed_app.py"), "--port", str(port), "--store", "custom"],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        with Browser(port) as browser:
            assert json.loads(browser.get("/")[1])["count"] == 1
            assert json.loads(browser.get("/")[1])["count"] == 2
            assert browser.request("POST", "/login", "name=Ann")[0] == 302
            assert json.loads(browser.get("/whoami")[1]) == {"user": "Ann", "flashes": ["welcome"]}
            assert browser.request("POST", "/logout", "")[0] == 302
            assert json.loads(browser.get("/whoami")[1]) == {"user": None, "flashes": []}
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
