"""pytest plugin: judge saved recordings in tests, and replay their servers for a client under test.

Registered through the ``pytest11`` entry point (``-p no:certmatch`` turns it off):

* ``certmatch_sessions(path, ...)`` (fixture): the diagnosed sessions of one or more recordings;
* :func:`assert_names_match` / :func:`assert_cause`: assertion helpers that fail with
  certmatch's explanation, fix and citations rather than a bare ``assert False``;
* ``certmatch_replay(path, ...)`` (fixture): serves the recorded servers on loopback
  (certificates of the same shape, re-signed by a replay CA) and returns the endpoints and the
  CA file; everything is stopped when the test ends.

The ini option ``certmatch_ca_files`` (paths relative to the rootdir) lists CA files the
recorded chains are trusted by, for both fixtures, as ``certmatch check --ca-file`` would.
See docs/pytest-plugin.md for a complete example.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from certmatch.core import report
from certmatch.core.anchors import RecordingAnchors
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.judge import Judge
from certmatch.core.recording import expand_paths, read_recording
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore
from certmatch.lab.replay import RunningReplay, load_sessions, running_replay

PathsArg = str | Path | Sequence[str | Path]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "certmatch_ca_files",
        type="paths",
        default=[],
        help="CA files (PEM) the recorded chains are trusted by, for certmatch_sessions and "
        "certmatch_replay (like `certmatch check --ca-file`)",
    )


def _paths(paths: PathsArg) -> list[Path]:
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    return expand_paths(given)


def _store(
    config: pytest.Config, ca_files: Iterable[str | Path], use_system_store: bool
) -> TrustStore:
    try:
        configured = [Path(p) for p in config.getini("certmatch_ca_files")]
    except ValueError:  # fixtures imported without the plugin registered: no ini option
        configured = []
    return TrustStore.load([*configured, *ca_files], use_system=use_system_store)


@pytest.fixture
def certmatch_sessions(pytestconfig: pytest.Config) -> Callable[..., list[Diagnosis]]:
    """A loader: ``certmatch_sessions(path, ca_files=(), use_system_store=True,
    use_recorded_ca=True)`` returns one :class:`~certmatch.core.diagnosis.Diagnosis` per
    recorded session, in file order.

    ``path`` is a recording, a directory of ``*.jsonl`` recordings, or a list of either.
    As in ``certmatch check``, each file's sessions are judged with the CAs its header
    carries as well (unless ``use_recorded_ca=False``). A bad line fails the test with the
    file and line number.
    """

    def load(
        paths: PathsArg,
        *,
        ca_files: Iterable[str | Path] = (),
        use_system_store: bool = True,
        use_recorded_ca: bool = True,
    ) -> list[Diagnosis]:
        anchors = RecordingAnchors(
            _store(pytestconfig, ca_files, use_system_store), use_recorded=use_recorded_ca
        )
        judges: dict[int, Judge] = {}
        diagnosed: list[Diagnosis] = []
        for path in _paths(paths):
            recording = read_recording(path)
            store, _recorded = anchors.store_for(recording.header.ca_certificates)
            judge = judges.get(id(store)) or judges.setdefault(id(store), Judge(store))
            bad = [p for p in recording.problems if not p.expected]
            if bad:
                pytest.fail(
                    "certmatch: unreadable recording lines:\n"
                    + "\n".join(report.shown_prose(str(problem)) for problem in bad),
                    pytrace=False,
                )
            diagnosed.extend(judge.diagnose(session) for session in recording.sessions)
        return diagnosed

    return load


def describe_failure(d: Diagnosis) -> str:
    """certmatch's verdict on a session, with every cause's explanation, fix and citations;
    names from the recording are escaped, so a hostile one cannot drive the terminal."""
    return report.describe(d)


def assert_names_match(d: Diagnosis, *, allow: Iterable[str] = ()) -> None:
    """Fail the test, with certmatch's explanation, unless the session is a clean match.

    Causes listed in ``allow`` (ids such as ``"wrong-order"``) are tolerated;
    warnings (``trailing-dot``, ``idn-form``, ``wrong-order``) never fail on their own.
    """
    allowed = set(allow)
    blocking = [f for f in d.findings if f.id not in allowed and f.cause.severity != "warning"]
    if blocking or (d.verdict != "match" and not d.findings):
        pytest.fail(describe_failure(d), pytrace=False)


def assert_cause(d: Diagnosis, cause_id: str, *, primary: bool = True) -> None:
    """Fail the test unless ``cause_id`` is the session's primary cause (or any cause, with
    ``primary=False``); the failure shows what certmatch found instead."""
    found = (d.primary.id if d.primary else None) if primary else None
    if (primary and found == cause_id) or (not primary and cause_id in d.cause_ids):
        return
    shown = printable(cause_id)
    expected = f"primary cause {shown}" if primary else f"cause {shown} among the causes"
    found_text = ", ".join(d.cause_ids) or "no cause (a clean match)"
    pytest.fail(f"expected {expected}, found {found_text}\n{describe_failure(d)}", pytrace=False)


@pytest.fixture
def certmatch_replay(pytestconfig: pytest.Config) -> Iterator[Callable[..., RunningReplay]]:
    """A starter: ``certmatch_replay(path, ca_files=(), use_system_store=True,
    listen_host="127.0.0.1")`` serves the recorded servers and returns a
    :class:`~certmatch.lab.replay.RunningReplay` (``.listeners`` with host, port, protocol and
    names; ``.listener_for(session_id)``; ``.ca_file`` to trust). Stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(
            paths: PathsArg,
            *,
            ca_files: Iterable[str | Path] = (),
            use_system_store: bool = True,
            listen_host: str = "127.0.0.1",
        ) -> RunningReplay:
            store = _store(pytestconfig, ca_files, use_system_store)
            sessions = load_sessions(_paths(paths))
            return stack.enter_context(running_replay(sessions, store, listen_host=listen_host))

        yield start
