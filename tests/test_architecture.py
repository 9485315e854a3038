"""The layers hold: the contracts in pyproject.toml pass, and each layer loads only what it may.

The layers (README, "Layout"): cli over lab and tui, over proxy, over net, over core.
import-linter checks every import statically; the tests below also check what importing a
layer really loads, which catches an import hidden in a function body at run time.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import certmatch

pytestmark = pytest.mark.pure

PACKAGE = Path(certmatch.__file__).parent
REPO = PACKAGE.parent


def _modules(layer: str) -> list[str]:
    path = PACKAGE / layer
    return [m.name for m in pkgutil.walk_packages([str(path)], f"certmatch.{layer}.")] + [
        f"certmatch.{layer}"
    ]


def _loaded_after_importing(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` top-level packages are in sys.modules after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules} & "
        f"set({list(watched)!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_import_linter_contracts_hold():
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_layer_is_declared():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    declared = {name.strip() for level in layers for name in level.split("|")}
    packages = {
        f"certmatch.{p.name}"
        for p in PACKAGE.iterdir()
        if (p / "__init__.py").exists() and p.name != "__pycache__"
    }
    assert packages == declared, "a package of certmatch is outside the declared layers"


def test_the_core_and_net_load_neither_mitmproxy_nor_textual():
    modules = _modules("core") + _modules("net")
    assert "certmatch.core.diagnosis" in modules  # the walk really found the package
    assert _loaded_after_importing(modules, ("mitmproxy", "textual")) == []


def test_the_tui_loads_no_mitmproxy():
    assert _loaded_after_importing(_modules("tui"), ("mitmproxy",)) == []


def test_the_command_line_starts_without_the_proxy_or_the_tui():
    """`certmatch check` must start fast: the CLI imports mitmproxy and Textual only on demand."""
    loaded = _loaded_after_importing(["certmatch.cli.main"], ("mitmproxy", "textual"))
    assert loaded == []


def test_the_wheel_claims_only_the_certmatch_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["certmatch"]


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_checkout_shims_only_load_the_package():
    """addons/*.py and tui/app.py keep the design's paths working from a checkout: no code."""
    shims = sorted((REPO / "addons").glob("*.py")) + [REPO / "tui" / "app.py"]
    assert [p.name for p in shims] == ["capture.py", "observe.py", "starttls.py", "app.py"]
    for shim in shims:
        assert _top_level_imports(shim) <= {"certmatch", "sys"}, shim
        assert len(shim.read_text().splitlines()) < 15, shim


def test_the_check_detects_a_forbidden_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import os\nfrom mitmproxy import ctx\n")
    assert "mitmproxy" in _top_level_imports(sample)
