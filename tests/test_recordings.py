"""The sample recordings in recordings/ say what MANIFEST.json claims, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from proxy_fixtures import REPO, venv_bin

from certmatch.core import causes
from certmatch.core.recording import read_recording

pytestmark = pytest.mark.pure

RECORDINGS = REPO / "recordings"
MANIFEST = json.loads((RECORDINGS / "MANIFEST.json").read_text())


def _check_json(*paths: Path) -> dict:
    done = subprocess.run(
        [
            venv_bin("certmatch"),
            "check",
            "--json",
            "--ca-file",
            str(RECORDINGS / "ca.pem"),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        check=False,  # no timeout: see test_cli.certmatch (pytest-timeout guards a hang)
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_every_recording_is_in_the_manifest_and_back():
    on_disk = {p.name for p in RECORDINGS.glob("*.jsonl")}
    assert on_disk == set(MANIFEST)


def test_check_agrees_with_what_each_recording_claims():
    report = _check_json(RECORDINGS)
    assert report["problems"] == []
    by_file = {Path(s["recording"]).name: s for s in report["sessions"]}
    assert set(by_file) == set(MANIFEST)
    for name, claim in MANIFEST.items():
        got = by_file[name]
        assert (got["verdict"], got["primary_cause"]) == (
            claim["verdict"],
            claim["primary_cause"],
        ), f"{name}: {got['explanation']}"
        if got["primary_cause"]:
            assert got["explanation"] and got["fix"], name


def test_no_explanation_or_fix_has_a_gap_where_a_part_was_empty():
    """A cause's text fills in parts that may be empty; none leaves two spaces behind."""
    report = _check_json(RECORDINGS)
    texts = [
        (Path(s["recording"]).name, f["id"], f[part])
        for s in report["sessions"]
        for f in s["findings"]
        for part in ("explanation", "fix")
    ]
    assert len({cause for _, cause, _ in texts}) >= 40
    gaps = [(name, cause, text) for name, cause, text in texts if "  " in text]
    assert gaps == []
    assert all(text == text.strip() for _, _, text in texts)


def test_every_cause_in_the_catalogue_has_a_recording():
    claimed = {claim["primary_cause"] for claim in MANIFEST.values()}
    assert set(causes.CAUSES) - claimed == set()


def test_recordings_hold_no_message_content_or_credentials():
    for path in RECORDINGS.glob("*.jsonl"):
        raw = path.read_bytes()
        assert b"secret" not in raw and b"LOGIN" not in raw, path
        recording = read_recording(path)
        assert recording.problems == []
        for session in recording.sessions:
            # every session holds what happened: a chain, an error, a STARTTLS phase, or a
            # client that left before the handshake (a port check)
            probe = session.client_decision == "closed-before-handshake"
            assert session.chain or session.server_error or session.starttls or probe, path
