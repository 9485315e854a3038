"""Installing certmatch as a tool, as README's "Installing certmatch as a tool" says: with
``uv tool install`` and with ``pipx install``, ``certmatch`` runs outside the checkout, and the
tool's own ``mitmdump`` loads certmatch's addons from the installed package and listens.

Each installer gets its own directories under the test's tmp_path; nothing is installed for the
user. The packages come from the Python registry (or the installer's cache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from proxy_fixtures import free_port, wait_for_port

import certmatch

REPO = Path(__file__).resolve().parent.parent
RECORDINGS = REPO / "recordings"

pytestmark = pytest.mark.timeout(300)


def _python() -> str:
    """The Python 3.12 the tool gets: the one CI and uv use, not the project's venv."""
    return os.environ.get("UV_PYTHON") or sys._base_executable


def _install_with_uv(home: Path) -> tuple[Path, Path]:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH (the README's test command runs under `uv run`)")
    env = {**os.environ, "UV_TOOL_DIR": str(home / "tools"), "UV_TOOL_BIN_DIR": str(home / "bin")}
    subprocess.run(
        [uv, "tool", "install", "--python", _python(), "--with-executables-from", "mitmproxy"]
        + [str(REPO)],
        env=env,
        check=True,
        capture_output=True,
        timeout=240,
    )
    return home / "bin", home / "tools" / "certmatch" / "bin" / "python"


def _install_with_pipx(home: Path) -> tuple[Path, Path]:
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.fail("pipx is not installed (Debian: apt-get install pipx; see .ci/)")
    env = {**os.environ, "PIPX_HOME": str(home / "pipx"), "PIPX_BIN_DIR": str(home / "bin")}
    subprocess.run(
        [pipx, "install", "--python", _python(), "--include-deps", str(REPO)],
        env=env,
        check=True,
        capture_output=True,
        timeout=240,
    )
    return home / "bin", home / "pipx" / "venvs" / "certmatch" / "bin" / "python"


@pytest.mark.parametrize("installer", [_install_with_uv, _install_with_pipx], ids=["uv", "pipx"])
def test_the_installed_tool_runs_outside_the_checkout_and_mitmdump_loads_its_addons(
    tmp_path, installer
) -> None:
    bin_dir, python = installer(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    version = subprocess.run(
        [bin_dir / "certmatch", "--version"],
        cwd=outside,
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0 and certmatch.__version__ in version.stdout

    check = subprocess.run(
        [bin_dir / "certmatch", "check", "--ca-file", RECORDINGS / "ca.pem"]
        + [RECORDINGS / "wrong-order.jsonl", RECORDINGS / "wildcard-apex.jsonl"],
        cwd=outside,
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1, check.stderr  # one session fails: wildcard-apex
    assert "wildcard-apex" in check.stdout

    # The addons, from the installed package, as README shows mitmproxy users.
    scripts = Path(
        subprocess.run(
            [
                python,
                "-c",
                "import importlib.resources as r; print(r.files('certmatch.proxy.scripts'))",
            ],
            cwd=outside,  # not the checkout: `python -c` imports from the current directory
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    assert scripts.is_relative_to(tmp_path), "the scripts must come from the tool, not the repo"
    port = free_port()
    record = outside / "sessions.jsonl"
    mitmdump = subprocess.Popen(
        [
            bin_dir / "mitmdump",
            "--mode",
            "reverse:tls://127.0.0.1:1",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "-s",
            scripts / "capture.py",
            "-s",
            scripts / "starttls.py",
            "--set",
            f"certmatch_record={record}",
            "--set",
            f"confdir={tmp_path / 'conf'}",
        ],
        cwd=outside,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, timeout=60)
        opened = threading.Event()
        for _ in range(100):  # the addon writes its header once mitmproxy is running
            if record.exists():
                break
            opened.wait(0.1)
    finally:
        mitmdump.terminate()
        output, _ = mitmdump.communicate(timeout=20)
    assert "Traceback" not in output, output
    assert record.exists(), f"the capture addon did not open its recording:\n{output}"
    assert json.loads(record.read_text().splitlines()[0])["type"] == "header"
