"""Export one session: its diagnosis as JSON and its chain as PEM, to files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from certmatch.core.certificates import to_pem
from certmatch.core.diagnosis import Diagnosis


def export_stem(session_id: str) -> str:
    """A file name stem that is safe on every system, from a session id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", session_id).strip("._") or "session"
    return f"certmatch-{safe[:80]}"


def session_json(d: Diagnosis, recording: str) -> str:
    """The diagnosis as ``certmatch check --json`` shows one session."""
    data = d.to_json()
    data["recording"] = recording
    return json.dumps(data, indent=2, ensure_ascii=True) + "\n"


def export_session(d: Diagnosis, recording: str, directory: Path) -> list[Path]:
    """Write ``certmatch-ID.json`` and, when there is a chain, ``certmatch-ID.chain.pem``.

    Returns the paths written; OSError (with the path in it) when the directory is not writable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = export_stem(d.facts.id)
    written = [directory / f"{stem}.json"]
    _write_private(written[0], session_json(d, recording))
    if d.facts.chain:
        pem = directory / f"{stem}.chain.pem"
        _write_private(pem, to_pem(d.facts.chain))
        written.append(pem)
    return written


def _write_private(path: Path, text: str) -> None:
    """Write a new file owner-only (0600): an export holds what the recording holds."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
