"""Node.js for the gateway's non-Python proofs: the npm install once per session, and running a script.

A missing ``node``/``npm`` or browser is a failure that says what to install, never a skip: these
tests are the proof that a caller outside Python works, so not running them must not look green.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).with_name("node")
CHROMIUM = os.environ.get("KIMIFLOW_CHROMIUM", "/usr/bin/chromium")
NPM_INSTALL_SECONDS = 300
NODE_MAJOR_MIN = 20


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: install Node.js {NODE_MAJOR_MIN}+ and npm "
                    "(Debian: apt-get install -y nodejs npm)", pytrace=False)
    return path


def _installed(node_modules: Path) -> bool:
    """True when every pinned dependency is in node_modules at exactly the pinned version."""
    pins: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = node_modules / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


def ensure_node_modules() -> Path:
    node = _tool("node")
    major = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    if int(major.strip().lstrip("v").split(".")[0]) < NODE_MAJOR_MIN:
        pytest.fail(f"node {major.strip()} is too old: install Node.js {NODE_MAJOR_MIN}+", pytrace=False)
    node_modules = NODE_DIR / "node_modules"
    if not _installed(node_modules):
        npm = _tool("npm")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                              text=True, timeout=NPM_INSTALL_SECONDS)
        if done.returncode != 0 or not _installed(node_modules):
            pytest.fail(f"`npm install` in {NODE_DIR} failed (exit {done.returncode}):\n{done.stderr[-2000:]}",
                        pytrace=False)
    return node_modules


def require_chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium) "
                    "or point KIMIFLOW_CHROMIUM at one", pytrace=False)
    return CHROMIUM


def run_node(script: str, *args: str, env: dict[str, str], timeout: float = 45.0) -> Any:
    """Run ``node script args`` in the node directory and return the JSON object it printed."""
    # Only what the script needs plus PATH/HOME: no proxy variables, so nothing leaves loopback.
    base = {name: os.environ[name] for name in ("PATH", "HOME", "TMPDIR") if name in os.environ}
    done = subprocess.run([_tool("node"), script, *args], cwd=NODE_DIR, env={**base, **env, "NO_PROXY": "*"},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"node {script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
