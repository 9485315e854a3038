"""The CAs the proxy judged with travel in the recording's header (issue 9).

check and replay trust them for that recording's sessions only, --ca-file adds to them,
--ignore-recorded-ca switches them off, and every trusted session names its anchor and
where it came from: a crafted recording can make its own sessions trusted, but never
silently.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from proxy_fixtures import venv_bin

from certmatch.cli.check import check
from certmatch.core.anchors import (
    HEADER_ORIGIN,
    RecordingAnchors,
    anchor_of,
    load_anchors,
    with_recorded,
)
from certmatch.core.certificates import parse_chain
from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge, JudgesByRecording
from certmatch.core.recording import RecordingWriter, read_recording
from certmatch.core.trust import TrustStore
from certmatch.lab import pki
from certmatch.lab.replay import plan_replay

pytestmark = pytest.mark.pure


def certmatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv_bin("certmatch"), *args], capture_output=True, text=True, check=False
    )


def b64(issued: pki.Issued) -> list[str]:
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in issued.chain()]


def session(chain: list[str], number: int = 1) -> SessionFacts:
    return SessionFacts(
        id=f"s{number}",
        # inside the validity of certificates minted now, whenever the test runs
        started=(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat(),
        protocol="imap",
        requested_host="mail.example.test",
        requested_host_source="sni",
        sni="mail.example.test",
        chain=chain,
        server_address="mail.example.test:993",
    )


@pytest.fixture(scope="module")
def self_signed() -> pki.Issued:
    return pki.issue_leaf(None, dns=["mail.example.test"])


@pytest.fixture
def crafted(tmp_path: Path, self_signed: pki.Issued) -> Path:
    """A recording whose header trusts its own self-signed certificate."""
    path = tmp_path / "crafted.jsonl"
    pem = self_signed.cert_pem().decode()
    with RecordingWriter(path, tool_version="t", ca_certificates=[pem]) as writer:
        writer.write(session(b64(self_signed)))
    return path


@pytest.fixture
def plain(tmp_path: Path, self_signed: pki.Issued) -> Path:
    """The same session in a recording whose header records no CA."""
    path = tmp_path / "plain.jsonl"
    with RecordingWriter(path, tool_version="t") as writer:
        writer.write(session(b64(self_signed), 2))
    return path


EMPTY = TrustStore((), ())


def test_a_recordings_own_ca_trusts_its_session_and_says_so(crafted, capsys) -> None:
    assert check([crafted], EMPTY, explain=True) == 0
    out = capsys.readouterr().out
    assert "✓ match" in out
    assert "trusted through: (empty subject; SAN mail.example.test) (SHA-256 " in out
    assert f"from {HEADER_ORIGIN}" in out
    assert "1 session trusted through CA certificates recorded in the recording's own" in out
    assert "--ignore-recorded-ca" in out


def test_ignore_recorded_ca_makes_it_untrusted(crafted, capsys) -> None:
    assert check([crafted], RecordingAnchors(EMPTY, use_recorded=False), explain=True) == 1
    out = capsys.readouterr().out
    assert "! untrusted" in out and "self-signed" in out
    assert "trusted through" not in out and HEADER_ORIGIN not in out


def test_recorded_cas_count_for_their_own_file_only(crafted, plain, capsys) -> None:
    assert check([crafted, plain], EMPTY, json_output=True) == 1
    document = json.loads(capsys.readouterr().out)
    by_id = {entry["id"]: entry for entry in document["sessions"]}
    assert by_id["s1"]["verdict"] == "match"
    assert by_id["s1"]["trust_anchor"]["origin"] == HEADER_ORIGIN
    assert by_id["s2"]["verdict"] == "untrusted" and by_id["s2"]["trust_anchor"] is None
    assert by_id["s2"]["primary_cause"] == "self-signed"
    assert document["summary"]["trusted_through_recorded_ca"] == 1


def test_the_cli_uses_recorded_cas_by_default_and_names_them(crafted) -> None:
    done = certmatch("check", "--no-system-store", "--explain", str(crafted))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"from {HEADER_ORIGIN}" in done.stdout
    ignored = certmatch("check", "--no-system-store", "--ignore-recorded-ca", str(crafted))
    assert ignored.returncode == 1 and "self-signed" in ignored.stdout


def test_ca_file_adds_to_the_recorded_ones_and_is_named(tmp_path, plain, self_signed) -> None:
    ca = tmp_path / "pinned.pem"
    ca.write_bytes(self_signed.cert_pem())
    done = certmatch("check", "--no-system-store", "--ca-file", str(ca), "--json", str(plain))
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = json.loads(done.stdout)["sessions"]
    assert entry["trust_anchor"]["origin"] == f"--ca-file {ca}"


def test_a_root_from_two_places_names_both(tmp_path, self_signed) -> None:
    ca = tmp_path / "root.pem"
    ca.write_bytes(self_signed.cert_pem())
    store = with_recorded(load_anchors([ca], use_system=False), [self_signed.cert])
    assert len(store.roots) == 1
    d = Judge(store).diagnose(session(b64(self_signed)))
    assert d.anchor is not None
    assert d.anchor.origin == f"--ca-file {ca} and {HEADER_ORIGIN}"
    assert store.sources == (str(ca), f"{HEADER_ORIGIN} (1 certificate)")


def test_a_header_ca_that_cannot_be_parsed_is_a_warning_and_trusts_nothing(
    tmp_path, self_signed, capsys
) -> None:
    path = tmp_path / "damaged.jsonl"
    with RecordingWriter(path, tool_version="t") as writer:
        writer.write(session(b64(self_signed)))
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["ca_certificates"] = [
        "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
        self_signed.cert_pem().decode(),
    ]
    path.write_text(json.dumps(header) + "\n" + lines[1] + "\n")
    assert check([path], EMPTY) == 0  # the readable one still counts
    captured = capsys.readouterr()
    assert "warning" in captured.err and "CA certificate 1 cannot be parsed" in captured.err
    assert "Traceback" not in captured.err


def test_anchor_of_names_the_root_that_signed_the_chain(self_signed) -> None:
    root = pki.make_ca("Anchor Root")
    leaf = pki.issue_leaf(root, dns=["mail.example.test"])
    store = load_anchors([], use_system=False)
    other = with_recorded(store, [self_signed.cert, root.cert])
    judged = Judge(other).diagnose(session(b64(leaf)))
    assert judged.anchor is not None and "Anchor Root" in judged.anchor.subject
    # Found in any store that holds the root; a store without it names no anchor.
    assert anchor_of(parse_chain(tuple(b64(leaf))), judged.trust, other) == judged.anchor
    assert anchor_of(parse_chain(tuple(b64(leaf))), judged.trust, EMPTY) is None
    untrusted = Judge(store).diagnose(session(b64(leaf)))
    assert untrusted.anchor is None and untrusted.verdict == "untrusted"


def test_replay_trusts_a_recorded_root_only_for_its_own_recordings_sessions() -> None:
    root = pki.make_ca("Replay Anchor Root")
    leaf = pki.issue_leaf(root, dns=["mail.example.test"])
    first, second = session(b64(leaf), 1), session(b64(leaf), 2)
    second.server_address = "other.example.test:993"
    trusting = with_recorded(EMPTY, [root.cert])
    plan = plan_replay([first, second], EMPTY, stores=[trusting, EMPTY])
    trusted = {c.subject.rfc4514_string() for c in plan.trusted}
    assert any("Replay Anchor Root" in name for name in trusted)
    by_address = {e.recorded_address: e for e in plan.endpoints}
    served_first = by_address["mail.example.test:993"].default.certificates
    served_second = by_address["other.example.test:993"].default.certificates
    # The first chain's rebuilt issuer is in the replay CA file; the second's is not.
    assert any(_verifies(served_first[0], c) for c in plan.trusted)
    assert not any(_verifies(served_second[0], c) for c in plan.trusted)


def _verifies(cert, issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001
        return False
    return True


def test_view_judges_each_recording_with_its_own_header_cas(crafted, plain, tmp_path) -> None:
    """What ``certmatch view`` hands the TUI: one judge per file's set of recorded CAs."""
    judges = JudgesByRecording(RecordingAnchors(EMPTY))
    (first,) = read_recording(crafted).sessions
    (second,) = read_recording(plain).sessions
    assert judges(crafted).judgement(first).verdict == "match"
    assert judges(plain).judgement(second).verdict == "untrusted"
    assert judges(plain) is judges(tmp_path / "not-written-yet.jsonl")  # the base store's
    assert judges(crafted) is judges(crafted)
    ignoring = JudgesByRecording(RecordingAnchors(EMPTY, use_recorded=False))
    assert ignoring(crafted).judgement(first).verdict == "untrusted"
