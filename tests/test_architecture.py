"""The domain stays free of mitmproxy and Textual: only the CLI wires them in."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import certmatch

pytestmark = pytest.mark.pure

PACKAGE = Path(certmatch.__file__).parent
FORBIDDEN = ("mitmproxy", "textual", "addons", "tui")
# The entry points that wire mitmproxy and the TUI in: the CLI, and the demo it runs.
WIRING = {"cli.py", "demo.py"}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_domain_modules_do_not_import_mitmproxy_or_textual():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in WIRING:
            continue
        bad = _top_level_imports(path) & set(FORBIDDEN)
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert offenders == {}, f"domain modules importing UI/proxy packages: {offenders}"


def test_importing_every_module_loads_neither_mitmproxy_nor_textual():
    modules = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "certmatch.")]
    assert "certmatch.diagnosis" in modules  # the walk really found the package
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in "
        f"{list(FORBIDDEN)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_check_detects_a_forbidden_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import os\nfrom mitmproxy import ctx\n")
    assert "mitmproxy" in _top_level_imports(sample)
