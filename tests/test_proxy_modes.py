"""The addon in stock mitmdump and through ``certmatch proxy``, in regular, SOCKS5 and reverse modes.

Regular and SOCKS5 modes make the proxy resolve the host name the client
asked for, so mitmdump runs with a private /etc/hosts (a mount namespace)
that maps the test names to loopback.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons
from proxy_fixtures import (
    free_port,
    mitmdump_process,
    private_hosts,
    s_client_speaking,
    stock_command,
    venv_bin,
)

from certmatch.core.diagnosis import diagnose
from certmatch.core.recording import read_recording
from certmatch.core.trust import TrustStore
from certmatch.proxy import CertmatchCapture, StartTlsAddon

pytestmark = pytest.mark.timeout(90)

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"

NAMES = ["imap.example.test", "wrong.example.test", "a.b.example.test", "example.test"]
CURL_PEER_FAILED_VERIFICATION = 60  # curl's exit code for a certificate it refuses


def _sessions(record: Path, expected: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and record.stat().st_size > 0:  # its header written
            sessions = read_recording(record).sessions
            if len(sessions) >= expected:
                return sessions
        time.sleep(0.05)
    return read_recording(record).sessions if record.exists() else []


def _curl(args: list[str], cafile: Path, user: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--cacert",
            str(cafile),
            "--user",
            f"{user}:{password}",
            *args,
        ],
        capture_output=True,
        check=False,
        timeout=20,
    )


@pytest.fixture
def store(pki) -> TrustStore:
    return TrustStore.load([pki.root_ca])


@pytest.mark.parametrize(
    ("mode", "curl_proxy", "source"),
    [
        ("regular", "--proxy", "http-connect"),
        ("socks5", "--socks5-hostname", "socks5"),
    ],
)
def test_curl_through_mitmdump_in_forward_modes(
    mode, curl_proxy, source, tmp_path, dovecot, pki, store
):
    port = free_port()
    record = tmp_path / "rec.jsonl"
    conf = tmp_path / "conf"
    argv = stock_command(
        "mitmdump", port=port, mode=mode, confdir=conf, record=record, ca_file=pki.root_ca
    )
    with (
        private_hosts(tmp_path, NAMES) as prefix,
        mitmdump_process(tmp_path, argv, prefix=prefix, port=port),
    ):
        ok = _curl(
            [
                curl_proxy,
                f"127.0.0.1:{port}",
                f"imaps://imap.example.test:{dovecot.imaps_port}/INBOX;UID=1",
            ],
            conf / "mitmproxy-ca-cert.pem",
            dovecot.user,
            dovecot.password,
        )
        wrong = _curl(
            [
                curl_proxy,
                f"127.0.0.1:{port}",
                f"imaps://wrong.example.test:{dovecot.imaps_port}/INBOX;UID=1",
            ],
            conf / "mitmproxy-ca-cert.pem",
            dovecot.user,
            dovecot.password,
        )
        sessions = _sessions(record, 2)
    assert ok.returncode == 0, ok.stderr
    assert b"known message body" in ok.stdout
    # Mirror mode: curl sees the server's own names and refuses them, as it would directly.
    assert wrong.returncode == CURL_PEER_FAILED_VERIFICATION, wrong.stderr
    by_host = {s.requested_host: s for s in sessions}
    assert set(by_host) == {"imap.example.test", "wrong.example.test"}
    good, bad = by_host["imap.example.test"], by_host["wrong.example.test"]
    assert good.sni == "imap.example.test" and good.requested_host_source == "sni"
    assert good.proxy_mode == mode
    assert good.server_address == f"imap.example.test:{dovecot.imaps_port}"
    assert good.server_ip == "127.0.0.1"
    assert diagnose(good, store).verdict == "match"
    assert diagnose(bad, store).primary.id == "name-not-in-certificate"
    assert (good.presented, good.client_decision) == ("mirror", "went-on")
    # curl checks the name after the handshake and hangs up without an alert.
    assert (bad.presented, bad.client_decision) == ("mirror", "closed-after-handshake")


def test_socks5_with_an_ip_literal(tmp_path, dovecot, pki, store):
    port = free_port()
    record = tmp_path / "rec.jsonl"
    conf = tmp_path / "conf"
    argv = stock_command(
        "mitmdump", port=port, mode="socks5", confdir=conf, record=record, ca_file=pki.root_ca
    )
    with mitmdump_process(tmp_path, argv, port=port):
        _curl(
            [
                "--socks5",
                f"127.0.0.1:{port}",
                f"imaps://127.0.0.1:{dovecot.imaps_port}/INBOX;UID=1",
            ],
            conf / "mitmproxy-ca-cert.pem",
            dovecot.user,
            dovecot.password,
        )
        sessions = _sessions(record, 1)
    facts = sessions[0]
    assert facts.sni is None  # curl sends no SNI for an IP literal (RFC 6066 §3)
    assert facts.requested_host == "127.0.0.1"
    assert facts.requested_host_source == "socks5"
    assert facts.upstream_sni is None
    result = diagnose(facts, store)
    assert result.primary.id == "ip-not-in-certificate"
    assert "mail.example.test" in result.primary.fix  # names the host name to use instead


def test_certmatch_proxy_command(tmp_path, dovecot, pki, store):
    port = free_port()
    record = tmp_path / "rec.jsonl"
    conf = tmp_path / "conf"
    argv = [
        venv_bin("certmatch"),
        "proxy",
        "--mode",
        f"reverse:tls://127.0.0.1:{dovecot.imaps_port}",
        "--record",
        str(record),
        "--listen-port",
        str(port),
        "--confdir",
        str(conf),
        "--ca-file",
        str(pki.root_ca),
        "--host",
        "alt.example.test",
    ]
    with mitmdump_process(tmp_path, argv, port=port):
        s_client_speaking(port, servername=None, cafile=conf / "mitmproxy-ca-cert.pem")
        s_client_speaking(
            port, servername="wrong.example.test", cafile=conf / "mitmproxy-ca-cert.pem"
        )
        sessions = _sessions(record, 2)
    log = (tmp_path / "proxy.log").read_text()
    assert "recording to" in log
    assert "no-sni-default-certificate" in log and "name-not-in-certificate" in log
    causes = sorted(diagnose(s, store).primary.id for s in sessions)
    assert causes == ["name-not-in-certificate", "no-sni-default-certificate"]
    assert all(s.proxy_mode.startswith("reverse:tls://") for s in sessions)


def test_certmatch_proxy_refuses_a_bad_ca_file(tmp_path):
    done = subprocess.run(
        [
            venv_bin("certmatch"),
            "proxy",
            "--mode",
            "regular",
            "--record",
            str(tmp_path / "r.jsonl"),
            "--ca-file",
            str(tmp_path / "missing.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "missing.pem" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_block_in_mitmdump_script_mode(tmp_path, dovecot, pki):
    """Loaded with -s, the addon's hooks run before mitmproxy's tlsconfig: block must still hold."""
    port = free_port()
    record = tmp_path / "rec.jsonl"
    conf = tmp_path / "conf"
    argv = stock_command(
        "mitmdump",
        port=port,
        mode=f"reverse:tls://127.0.0.1:{dovecot.imaps_port}",
        confdir=conf,
        record=record,
        ca_file=pki.root_ca,
    ) + ["--set", "certmatch_on_mismatch=block"]
    with mitmdump_process(tmp_path, argv, port=port):
        blocked = s_client_speaking(
            port, servername="wrong.example.test", cafile=conf / "mitmproxy-ca-cert.pem"
        )
        passed = s_client_speaking(
            port, servername="imap.example.test", cafile=conf / "mitmproxy-ca-cert.pem"
        )
        sessions = _sessions(record, 2)
    assert blocked.chain == []  # the client never got a certificate
    assert passed.verify_code == 0 and passed.chain
    assert [(s.requested_host, s.action) for s in sessions] == [
        ("wrong.example.test", "block"),
        ("imap.example.test", "pass"),
    ]
    assert all(s.client_error is None for s in sessions)
    log = (tmp_path / "proxy.log").read_text()
    assert "closing the client connection for wrong.example.test" in log
    assert "Traceback" not in log


def test_mitmweb_loads_the_addon_script(tmp_path, dovecot, pki, store):
    port, web_port = free_port(), free_port()
    record = tmp_path / "rec.jsonl"
    conf = tmp_path / "conf"
    argv = stock_command(
        "mitmweb",
        port=port,
        mode=f"reverse:tls://127.0.0.1:{dovecot.imaps_port}",
        confdir=conf,
        record=record,
        ca_file=pki.root_ca,
        extra=("--no-web-open-browser", "--web-port", str(web_port)),
    )
    with mitmdump_process(tmp_path, argv, port=port):
        s_client_speaking(
            port, servername="wrong.example.test", cafile=conf / "mitmproxy-ca-cert.pem"
        )
        sessions = _sessions(record, 1)
    assert len(sessions) == 1
    assert diagnose(sessions[0], store).primary.id == "name-not-in-certificate"


# -- every option can be set the way the README sets them ------------------------------------

# One example value per certmatch option, as text after ``--set name=``.
SET_EXAMPLES = {
    "certmatch_record": "{tmp}/set.jsonl",
    "certmatch_present": "substitute",
    "certmatch_on_mismatch": "block",
    "certmatch_ca_file": "{ca}",
    "certmatch_host": "imap.example.test",
    "certmatch_sni_probe": "false",
    "certmatch_starttls": "imap",
    "certmatch_starttls_timeout": "2",
    "certmatch_dns": "false",
    "certmatch_resolver": "[::1]:5353",
    "certmatch_handshake_timeout": "3",
    "certmatch_listen_backlog": "512",
}


def test_every_certmatch_option_can_be_set_with_set(tmp_path, pki):
    """mitmproxy's ``--set`` parses str, int, bool, optional str/int and sequences of str;
    a float option stopped the proxy at startup ("unsupported option type")."""
    capture, starttls = CertmatchCapture(), StartTlsAddon()
    with taddons.context(capture, starttls) as tctx:
        every = tctx.options.keys()  # an OptManager cannot be iterated itself
        names = {name for name in every if name.startswith("certmatch_")}
        assert names == set(SET_EXAMPLES), "give each new option an example value here"
        # All at once, as mitmdump applies its command line's --set options.
        tctx.options.set(
            *(
                f"{name}={example.format(tmp=tmp_path, ca=pki.root_ca)}"
                for name, example in SET_EXAMPLES.items()
            )
        )
        try:
            assert (
                tctx.options.certmatch_record,
                tctx.options.certmatch_present,
                tctx.options.certmatch_on_mismatch,
                tctx.options.certmatch_ca_file,
                tctx.options.certmatch_host,
                tctx.options.certmatch_sni_probe,
                tctx.options.certmatch_starttls,
                tctx.options.certmatch_starttls_timeout,
            ) == (
                f"{tmp_path}/set.jsonl",
                "substitute",
                "block",
                [str(pki.root_ca)],
                "imap.example.test",
                False,
                "imap",
                2,
            )
            assert capture.writer is not None  # the addons took the values, too
        finally:
            capture.done()
        with pytest.raises(exceptions.OptionsError, match="whole number"):
            tctx.options.set("certmatch_starttls_timeout=0")


# One ``certmatch proxy`` flag per option, and the value the addons should then hold.
PROXY_FLAGS: dict[str, tuple[list[str], object]] = {
    "certmatch_record": (["--record", "{tmp}/flags.jsonl"], "{tmp}/flags.jsonl"),
    "certmatch_present": (["--present", "substitute"], "substitute"),
    "certmatch_on_mismatch": (["--on-mismatch", "block"], "block"),
    "certmatch_ca_file": (["--ca-file", "{ca}"], ["{ca}"]),
    "certmatch_host": (["--host", "imap.example.test"], "imap.example.test"),
    "certmatch_sni_probe": (["--no-sni-probe"], False),
    "certmatch_starttls": (["--starttls", "pop3"], "pop3"),
    "certmatch_starttls_timeout": (["--starttls-timeout", "7"], 7),
    "certmatch_dns": (["--no-dns"], False),
    "certmatch_resolver": (
        ["--resolver", "127.0.0.1:5353", "--resolver", "[::1]:53"],
        ["127.0.0.1:5353", "[::1]:53"],
    ),
    "certmatch_handshake_timeout": (["--handshake-timeout", "9"], 9),
    "certmatch_listen_backlog": (["--listen-backlog", "2048"], 2048),
}


def _filled(value: object, tmp: Path, ca: Path) -> object:
    if isinstance(value, str):
        return value.format(tmp=tmp, ca=ca)
    if isinstance(value, list):
        return [_filled(v, tmp, ca) for v in value]
    return value


def test_every_certmatch_option_can_be_set_by_certmatch_proxy(tmp_path, pki):
    """Each option has a ``certmatch proxy`` flag, which reaches the addons through the
    ``--set`` mitmdump is given."""
    from certmatch.cli.parser import build_parser
    from certmatch.cli.proxy import mitmdump_args

    flags = [
        str(_filled(part, tmp_path, pki.root_ca))
        for argv, _ in PROXY_FLAGS.values()
        for part in argv
    ]
    args = build_parser().parse_args(["proxy", "--mode", "reverse:tls://127.0.0.1:1", *flags])
    mitm = mitmdump_args(args)
    sets = [
        value
        for flag, value in itertools.pairwise(mitm)
        if flag == "--set" and value.startswith("certmatch_")
    ]
    capture, starttls = CertmatchCapture(), StartTlsAddon()
    with taddons.context(capture, starttls) as tctx:
        every = tctx.options.keys()  # an OptManager cannot be iterated itself
        names = {name for name in every if name.startswith("certmatch_")}
        assert names == set(PROXY_FLAGS), "give each new option a certmatch proxy flag"
        tctx.options.set(*sets)
        try:
            for name, (_, expected) in PROXY_FLAGS.items():
                assert getattr(tctx.options, name) == _filled(expected, tmp_path, pki.root_ca), name
        finally:
            capture.done()


@pytest.mark.parametrize("value", ["0", "1.5", "soon"])
def test_certmatch_proxy_takes_whole_seconds_only(tmp_path, value):
    done = subprocess.run(
        [venv_bin("certmatch"), "proxy", "--mode", "socks5", "--record", str(tmp_path / "r.jsonl")]
        + ["--starttls-timeout", value],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--starttls-timeout" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.jsonl").exists()


# --- mistakes caught before mitmproxy starts: one line, nothing left behind ------------------


def _proxy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv_bin("certmatch"), "proxy", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _one_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_port_another_program_holds_is_one_line_before_anything_is_written(tmp_path):
    record = tmp_path / "r.jsonl"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _proxy(
            "--mode", "reverse:tls://127.0.0.1:993", "--listen-port", str(port),
            "--record", str(record),
        )  # fmt: skip
    _one_line(done, f"127.0.0.1:{port}", "another program listens", "--listen-port")
    assert not record.exists()  # no header-only recording left behind


def test_a_recording_in_a_missing_directory_is_refused(tmp_path):
    record = tmp_path / "typo" / "r.jsonl"
    done = _proxy("--mode", "socks5", "--record", str(record))
    _one_line(done, "does not exist", str(record.parent))
    assert not record.parent.exists()  # never created behind the user's back


def test_appending_to_a_recording_judged_with_other_cas_is_one_line(tmp_path, pki):
    record = tmp_path / "r.jsonl"
    shutil.copy(RECORDINGS / "correct.jsonl", record)  # its header trusts no extra CA
    before = record.read_bytes()
    done = _proxy("--mode", "socks5", "--record", str(record), "--ca-file", str(pki.root_ca))
    _one_line(done, "will not append to this recording", "same CA files")
    assert record.read_bytes() == before


def test_side_handshake_timeout_without_observe_is_refused(tmp_path):
    done = _proxy(
        "--mode", "socks5", "--side-handshake-timeout", "3", "--record", str(tmp_path / "r.jsonl")
    )  # fmt: skip
    _one_line(done, "--side-handshake-timeout", "--observe")
