"""``certmatch proxy`` starts with what listening needs, and says so as soon as it listens (issue 14).

A real ``certmatch proxy`` process, with one more mitmproxy script (passed after ``--``) whose
``running`` hook reports what the process has imported by then and marks where the other
addons' ``running`` hooks run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from proxy_fixtures import free_port

pytestmark = pytest.mark.timeout(120)

LISTEN_LINE = "proxy listening on"
MARK = "another addon's running hook"
MODULES = (
    "certmatch.proxy.observe",
    "certmatch.proxy.capture",
    "certmatch.proxy.presentation",
    "certmatch.cli.check",
    "certmatch.cli.demo",
)

WITNESS = f"""
import sys


class Witness:
    def running(self):
        for module in {MODULES!r}:
            print(f"imported {{module}}: {{module in sys.modules}}", file=sys.stderr, flush=True)
        print("{MARK}", file=sys.stderr, flush=True)


addons = [Witness()]
"""


def listen_queue(port: int) -> int:
    """The backlog of the socket listening on ``port`` (``ss``'s Send-Q for a listener)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


def expected_backlog() -> int:
    return min(4096, int(Path("/proc/sys/net/core/somaxconn").read_text()))


@pytest.mark.parametrize(
    ("flags", "needed"),
    [
        ([], {"certmatch.proxy.capture", "certmatch.proxy.presentation"}),
        (["--observe"], {"certmatch.proxy.observe"}),
    ],
    ids=["capture", "observe"],
)
def test_the_listen_line_comes_first_with_the_backlog_set_and_no_unneeded_imports(
    tmp_path, flags, needed
):
    port = free_port()
    witness = tmp_path / "witness.py"
    witness.write_text(WITNESS)
    argv = [sys.executable, "-m", "certmatch", "proxy", "--mode", "reverse:tls://127.0.0.1:1"]
    argv += ["--listen-port", str(port), "--record", str(tmp_path / "r.jsonl")]
    argv += ["--confdir", str(tmp_path / "conf"), *flags, "--", "-s", str(witness)]
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    queue_at_listen_line = None
    try:
        assert child.stderr is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            MARK in "".join(lines) and queue_at_listen_line is not None
        ):
            line = child.stderr.readline()
            if not line:
                break
            lines.append(line)
            if LISTEN_LINE in line:
                queue_at_listen_line = listen_queue(port)
    finally:
        child.terminate()
        child.wait(15)
    shown = "".join(lines)
    listen_at = next((i for i, line in enumerate(lines) if LISTEN_LINE in line), None)
    mark_at = next((i for i, line in enumerate(lines) if MARK in line), None)
    assert listen_at is not None and mark_at is not None, shown
    # Printed before the other addons' running hooks (mitmproxy's tlsconfig loads its CA
    # again in its own), not after all of them.
    assert listen_at < mark_at, shown
    if not flags:
        # The backlog is already certmatch's: from the listen line on, a burst is not dropped.
        assert queue_at_listen_line == expected_backlog(), shown
    # Capturing does not load the observing relay, nor observing the intercepting proxy, and
    # neither loads the other commands.
    for module in MODULES:
        assert f"imported {module}: {module in needed}" in shown
