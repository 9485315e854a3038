"""The ``certmatch check`` command as a user runs it: output, exit codes, and bad input."""

from __future__ import annotations

import json
import subprocess

import pytest
from proxy_fixtures import REPO, venv_bin

pytestmark = pytest.mark.pure

RECORDINGS = REPO / "recordings"
CA = RECORDINGS / "ca.pem"


def certmatch(*args: str) -> subprocess.CompletedProcess:
    # No subprocess timeout (pytest-timeout guards a hang): Popen.wait(timeout) polls with
    # time.sleep, which fails with EINVAL under `faketime` with FAKETIME_DONT_FAKE_MONOTONIC=1.
    return subprocess.run(
        [venv_bin("certmatch"), *args], capture_output=True, text=True, check=False
    )


def _assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_a_matching_session_exits_0():
    done = certmatch("check", "--ca-file", str(CA), str(RECORDINGS / "correct.jsonl"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ match" in done.stdout
    assert "1 session: 1 match; 0 failing." in done.stdout


def test_a_mismatch_exits_1_and_names_host_names_and_cause():
    done = certmatch(
        "check", "--ca-file", str(CA), str(RECORDINGS / "name-not-in-certificate.jsonl")
    )
    assert done.returncode == 1
    line = done.stdout.splitlines()[0]
    for part in ("wrong.example.test", "other.example.net", "mismatch", "name-not-in-certificate"):
        assert part in line


def test_explain_prints_why_fix_and_citations():
    done = certmatch(
        "check", "-v", "--ca-file", str(CA), str(RECORDINGS / "wildcard-too-deep.jsonl")
    )
    assert "why:" in done.stdout and "fix:" in done.stdout
    assert "RFC 6125 §6.4.3" in done.stdout


def test_json_output_has_the_documented_fields():
    done = certmatch(
        "check",
        "--json",
        "--ca-file",
        str(CA),
        str(RECORDINGS / "no-sni-default-certificate.jsonl"),
    )
    assert done.returncode == 1
    report = json.loads(done.stdout)
    (session,) = report["sessions"]
    for key in (
        "requested_host",
        "requested_host_source",
        "sni",
        "verdict",
        "primary_cause",
        "causes",
        "explanation",
        "citations",
    ):
        assert key in session
    assert session["sni"] is None
    assert session["requested_host"] == "alt.example.test"
    assert session["requested_host_source"] == "option"
    assert session["verdict"] == "mismatch"
    assert session["primary_cause"] == "no-sni-default-certificate"
    assert any("RFC 6066" in c for c in session["citations"])
    assert report["summary"]["sessions"] == 1


def test_fail_on_selects_which_causes_fail():
    wildcard = str(RECORDINGS / "wildcard-apex.jsonl")
    assert (
        certmatch("check", "--ca-file", str(CA), "--fail-on", "expired", wildcard).returncode == 0
    )
    assert (
        certmatch(
            "check", "--ca-file", str(CA), "--fail-on", "wildcard-apex,expired", wildcard
        ).returncode
        == 1
    )
    # a warning-only session passes by default but fails with --fail-on any
    dot = str(RECORDINGS / "trailing-dot.jsonl")
    assert certmatch("check", "--ca-file", str(CA), dot).returncode == 0
    assert certmatch("check", "--ca-file", str(CA), "--fail-on", "any", dot).returncode == 1


def test_unknown_fail_on_id_is_a_usage_error():
    done = certmatch("check", "--fail-on", "wildcard-typo", str(RECORDINGS / "correct.jsonl"))
    _assert_one_line_error(done, "wildcard-typo", "Known ids")


def test_missing_file(tmp_path):
    _assert_one_line_error(certmatch("check", str(tmp_path / "nope.jsonl")), "nope.jsonl")


def test_not_a_recording(tmp_path):
    pem = tmp_path / "cert.jsonl"
    pem.write_text(CA.read_text())
    _assert_one_line_error(certmatch("check", str(pem)), "cert.jsonl")


def test_bad_ca_file(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    _assert_one_line_error(
        certmatch("check", "--ca-file", str(bad), str(RECORDINGS / "correct.jsonl")), "ca.pem"
    )


def test_a_bad_line_is_reported_and_good_records_are_kept(tmp_path):
    lines = (RECORDINGS / "correct.jsonl").read_text().splitlines()
    wrong = (RECORDINGS / "name-not-in-certificate.jsonl").read_text().splitlines()[1]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], lines[1], "{not json", wrong]) + "\n")
    done = certmatch("check", "--ca-file", str(CA), str(broken))
    assert done.returncode == 2  # an input error outranks failing sessions
    assert f"{broken}:3:" in done.stderr
    assert "Traceback" not in done.stderr
    assert "imap.example.test" in done.stdout and "wrong.example.test" in done.stdout


def test_a_killed_proxys_partial_last_line_is_a_warning(tmp_path):
    lines = (RECORDINGS / "correct.jsonl").read_text().splitlines()
    partial = tmp_path / "killed.jsonl"
    partial.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[1][:50])
    done = certmatch("check", "--ca-file", str(CA), str(partial))
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and f"{partial}:3" in done.stderr
    assert "1 session: 1 match" in done.stdout


def test_no_command_prints_help():
    done = certmatch()
    assert done.returncode == 2
    assert "check" in done.stdout and "proxy" in done.stdout


@pytest.mark.parametrize("args", [["check"], ["proxy"]])
def test_missing_arguments_are_explained(args):
    done = certmatch(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "required" in done.stderr


def test_a_bad_proxy_mode_is_one_line(tmp_path):
    done = certmatch("proxy", "--mode", "bogus://", "--record", str(tmp_path / "r.jsonl"))
    _assert_one_line_error(done, "--mode bogus://", "reverse:tls://")
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        # mitmproxy reads a reverse mode without a scheme as an HTTPS reverse proxy
        (["--mode", "reverse:127.0.0.1:993"], "a mail server needs reverse:tls://HOST:PORT"),
        (["--mode", "reverse:http://127.0.0.1:143"], "'http' is mitmproxy's HTTP reverse proxy"),
        (["--mode", "reverse:tls://127.0.0.1:993", "--listen-port", "80000"], "from 1 to 65535"),
        (["--mode", "reverse:tls://127.0.0.1:993", "--listen-port", "-1"], "from 1 to 65535"),
        (
            ["--mode", "reverse:tls://127.0.0.1:993", "--observe", "--present", "substitute"],
            "--present does not apply",
        ),
    ],
)
def test_proxy_options_that_cannot_work_are_refused_in_one_line(tmp_path, extra, words):
    done = certmatch("proxy", *extra, "--record", str(tmp_path / "r.jsonl"))
    _assert_one_line_error(done, words)
    assert not (tmp_path / "r.jsonl").exists()


# --- damaged and hostile recordings ----------------------------------------------------------


def _sample_lines(name: str) -> list[str]:
    return (RECORDINGS / name).read_text(encoding="utf-8").splitlines()


def test_a_cut_record_mid_file_is_a_warning(tmp_path):
    # A proxy killed mid-write, then restarted: its writer appends after the cut line.
    header, good = _sample_lines("correct.jsonl")[:2]
    wrong = _sample_lines("name-not-in-certificate.jsonl")[1]
    restarted = tmp_path / "restarted.jsonl"
    restarted.write_text("\n".join([header, good, good[:700], wrong]) + "\n", encoding="utf-8")
    done = certmatch("check", "--ca-file", str(CA), str(restarted))
    assert done.returncode == 1, done.stderr  # the failing session, not an input error
    assert f"warning: {restarted}:3:" in done.stderr and "mid-record" in done.stderr
    assert "2 sessions" in done.stdout and "wrong.example.test" in done.stdout


def test_check_dir_judges_every_recording_and_names_the_file_that_is_not_one(tmp_path):
    for name in ("correct.jsonl", "name-not-in-certificate.jsonl"):
        (tmp_path / name).write_text((RECORDINGS / name).read_text())
    (tmp_path / "b-notes.jsonl").write_text('{"log": {"entries": []}}\n')
    done = certmatch("check", "--ca-file", str(CA), str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (error,) = done.stderr.strip().splitlines()
    assert "b-notes.jsonl" in error and "HAR" in error
    assert "imap.example.test" in done.stdout and "wrong.example.test" in done.stdout
    assert "2 sessions" in done.stdout


def test_check_of_one_file_that_is_not_a_recording_says_so_in_one_line(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"type":"header"\n')
    done = certmatch("check", str(path))
    assert done.returncode == 2
    (error,) = done.stderr.strip().splitlines()
    assert error.startswith(f"certmatch: error: {path}:1:")
    assert done.stdout == ""  # no "No sessions recorded." after the error


def _hostile_recording(tmp_path, sni: str) -> tuple:
    header, good = _sample_lines("correct.jsonl")[:2]
    data = json.loads(good)
    data["sni"] = data["requested_host"] = sni
    hostile = json.dumps(data, ensure_ascii=True)  # "\ud800" stays an escape in the file
    path = tmp_path / "hostile.jsonl"
    path.write_text(f"{header}\n{hostile}\n{good}\n", encoding="utf-8")
    return path, data["id"]


def test_a_lone_surrogate_never_crashes_check(tmp_path):
    path, hostile_id = _hostile_recording(tmp_path, "\ud800x.example.test")
    done = certmatch("check", "--ca-file", str(CA), str(path))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1)
    assert "2 sessions" in done.stdout  # the line after it was judged too
    assert "\\ud800x.example.test" in done.stdout

    done = certmatch("check", "--json", "--ca-file", str(CA), str(path))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.isascii()
    report = json.loads(done.stdout)
    assert report["sessions"][0]["sni"] == "\ud800x.example.test"
    assert report["sessions"][0]["id"] == hostile_id and len(report["sessions"]) == 2


def test_json_escapes_c1_and_bidi_controls_and_keeps_the_data(tmp_path):
    sni = "\u202emoc.\x9b31m.example.test"
    path, _ = _hostile_recording(tmp_path, sni)
    done = certmatch("check", "--json", "--ca-file", str(CA), str(path))
    assert done.stdout.isascii()
    assert "\\u202e" in done.stdout and "\\u009b" in done.stdout
    report = json.loads(done.stdout)
    assert report["sessions"][0]["sni"] == sni
    assert set(report) == {"sessions", "summary", "problems"}
    assert report["summary"]["sessions"] == 2


def test_json_is_written_one_session_per_line(tmp_path):
    done = certmatch("check", "--json", "--ca-file", str(CA), str(RECORDINGS))
    lines = done.stdout.splitlines()
    report = json.loads(done.stdout)
    assert lines[:2] == ["{", '  "sessions": [']
    for entry, line in zip(report["sessions"], lines[2:], strict=False):
        assert json.loads(line.strip().rstrip(",")) == entry


def test_a_line_over_1_mb_is_one_error_and_the_rest_is_judged(tmp_path):
    header, good = _sample_lines("correct.jsonl")[:2]
    path = tmp_path / "huge.jsonl"
    with path.open("w", encoding="utf-8") as file:
        file.write(header + "\n")
        file.write('{"type": "session", "id": "' + "x" * (3 * 1024 * 1024) + '"}\n')
        file.write(good + "\n")
    done = certmatch("check", "--ca-file", str(CA), str(path))
    assert done.returncode == 2
    (error,) = done.stderr.strip().splitlines()
    assert f"{path}:2:" in error and "longer than 1 MB" in error
    assert "1 session: 1 match" in done.stdout


def test_json_entries_of_repeated_situations_equal_a_full_diagnosis(tmp_path, capsys, monkeypatch):
    """--json writes a situation seen again from a template; every entry must still be what
    a full diagnosis of that very session gives (ids, times and client addresses its own)."""
    from datetime import datetime, timedelta

    from certmatch.cli.check import check
    from certmatch.core.judge import Judge
    from certmatch.core.recording import read_recording
    from certmatch.core.trust import TrustStore

    header = _sample_lines("correct.jsonl")[0]
    samples = [
        json.loads(line)
        for path in sorted(RECORDINGS.glob("*.jsonl"))
        for line in _sample_lines(path.name)[1:]
    ]
    lines = [header]
    for cycle in range(4):
        later = timedelta(seconds=cycle) if cycle < 3 else timedelta(days=400)
        for i, data in enumerate(samples):
            data = dict(data, id=f"c{cycle}-{i}", client_address=f"192.0.2.{cycle}:{4000 + i}")
            started = datetime.fromisoformat(data["started"]) + later
            data["started"] = started.isoformat()  # the last cycle is past most certificates
            lines.append(json.dumps(data))
    path = tmp_path / "repeated.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = TrustStore.load([CA], use_system=False)
    explained = []
    full = Judge.diagnose

    def counted(self, facts):
        explained.append(facts.id)
        return full(self, facts)

    monkeypatch.setattr(Judge, "diagnose", counted)
    check([path], store, json_output=True)
    monkeypatch.undo()
    written = json.loads(capsys.readouterr().out)["sessions"]
    # Most sessions of the second and third cycles came from templates, not a full diagnosis.
    assert len(explained) < 0.6 * 4 * len(samples)

    judge = Judge(store)
    expected = []
    for facts in read_recording(path).sessions:
        entry = judge.diagnose(facts).to_json()
        entry["recording"] = str(path)
        expected.append(entry)
    assert len(written) == 4 * len(samples)
    assert written == expected


def test_explain_shows_the_three_names_of_a_passing_session_with_dns(tmp_path):
    lines = (RECORDINGS / "correct.jsonl").read_text().splitlines()
    session = json.loads(lines[1])
    session["dns"] = {
        "host": session["requested_host"],
        "resolvers": ["127.0.0.53:53"],
        "server_ip": session["server_ip"],
        "mail_domain": None,
        "answers": [
            {
                "name": session["requested_host"],
                "type": "A",
                "resolver": "127.0.0.53:53",
                "data": [session["server_ip"]],
                "ttl": 300,
                "error": None,
            }
        ],
    }
    recording = tmp_path / "dns.jsonl"
    recording.write_text(f"{lines[0]}\n{json.dumps(session)}\n")
    done = certmatch("check", "--explain", "--ca-file", str(CA), str(recording))
    assert done.returncode == 0 and "✓ match" in done.stdout, done.stderr
    assert f"client:      {session['requested_host']} (sni)" in done.stdout
    assert f"DNS:         {session['requested_host']} → {session['server_ip']}" in done.stdout
    assert "certificate: " in done.stdout and "why:" not in done.stdout


def test_json_writes_each_sessions_own_dns_facts(tmp_path):
    """Sessions that differ only in their TTLs and look-up times share a judgement, and each
    is written with its own DNS facts."""
    lines = (RECORDINGS / "cname-alias.jsonl").read_text().splitlines()
    recording = tmp_path / "ttl.jsonl"
    with recording.open("w") as out:
        out.write(lines[0] + "\n")
        for n in range(4):
            session = json.loads(lines[1])
            session["id"] = f"s{n}"
            session["dns"]["elapsed"] = n / 100
            session["dns"]["started"] = f"2026-01-01T00:00:0{n}.000+00:00"
            for answer in session["dns"]["answers"]:
                if answer["ttl"] is not None:
                    answer["ttl"] = 300 - n
            out.write(json.dumps(session) + "\n")
    done = certmatch("check", "--json", "--ca-file", str(CA), str(recording))
    sessions = json.loads(done.stdout)["sessions"]
    assert [s["primary_cause"] for s in sessions] == ["cname-alias"] * 4, done.stderr
    for n, session in enumerate(sessions):
        assert session["id"] == f"s{n}" and session["dns"]["elapsed"] == n / 100
        assert {a["ttl"] for a in session["dns"]["answers"]} - {None} == {300 - n}
