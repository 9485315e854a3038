"""Replay: look-alike chains judged like the originals, served to real clients (openssl, curl)."""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import json
import re
import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core.diagnosis import diagnose
from certmatch.core.facts import SessionFacts
from certmatch.core.recording import expand_paths
from certmatch.core.trust import TrustStore
from certmatch.lab.replay import (
    ReplayChain,
    ReplayEndpoint,
    load_sessions,
    plan_replay,
    running_replay,
)

REPO = Path(__file__).resolve().parent.parent
RECORDINGS = REPO / "recordings"
SAMPLE_CA = RECORDINGS / "ca.pem"

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is not installed"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture(scope="module")
def sessions() -> list[SessionFacts]:
    return load_sessions(expand_paths([RECORDINGS]))


@pytest.fixture(scope="module")
def sample_store() -> TrustStore:
    return TrustStore.load([SAMPLE_CA], use_system=False)


@pytest.fixture(scope="module")
def replay(sessions, sample_store):
    """The whole of recordings/ served once for this module."""
    with running_replay(sessions, sample_store) as running:
        yield running


def _b64(chain: ReplayChain) -> list[str]:
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain.certificates]


def _served_chain(endpoint: ReplayEndpoint, sni: str | None) -> ReplayChain:
    return endpoint.by_sni.get(sni.lower(), endpoint.default) if sni else endpoint.default


def _replayed(replay, session: SessionFacts) -> tuple[ReplayEndpoint, SessionFacts]:
    """The session as it would be recorded against the replay: same facts, replayed chains."""
    endpoint = replay.listener_for(session.id).endpoint
    facts = dataclasses.replace(session, chain=_b64(_served_chain(endpoint, session.sni)))
    if session.sni_probe is not None and session.sni_probe.chain:
        probe_chain = endpoint.by_sni[session.sni_probe.sni.lower()]
        facts.sni_probe = dataclasses.replace(session.sni_probe, chain=_b64(probe_chain))
    return endpoint, facts


def _replayable(sessions, replay):
    """The sessions the replay serves: those it skipped (with a reason) are tested apart."""
    skipped = {s.id for s in replay.plan.skipped}
    return [s for s in sessions if s.chain and s.id not in skipped]


def test_replayed_chains_get_the_same_verdict_and_causes(sessions, sample_store, replay):
    replay_store = TrustStore.load([replay.ca_file], use_system=False)
    compared = 0
    for session in _replayable(sessions, replay):
        _, facts = _replayed(replay, session)
        original, replayed = diagnose(session, sample_store), diagnose(facts, replay_store)
        assert (replayed.verdict, replayed.cause_ids) == (original.verdict, original.cause_ids), (
            session.id
        )
        compared += 1
    assert compared >= 20  # every cause in recordings/ that has a certificate


def test_replayed_chains_keep_the_shape(sessions, replay):
    for session in _replayable(sessions, replay):
        _, facts = _replayed(replay, session)
        originals = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in session.chain]
        copies = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in facts.chain]
        assert len(copies) == len(originals)
        for original, copy in zip(originals, copies, strict=True):
            assert copy.subject == original.subject and copy.issuer == original.issuer
            assert copy.not_valid_before_utc == original.not_valid_before_utc
            assert copy.not_valid_after_utc == original.not_valid_after_utc
            assert copy.public_key() != original.public_key()  # new keys, never the original's
            for oid in (
                x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
            ):
                try:
                    want = original.extensions.get_extension_for_oid(oid).value.public_bytes()
                except x509.ExtensionNotFound:
                    with pytest.raises(x509.ExtensionNotFound):
                        copy.extensions.get_extension_for_oid(oid)
                    continue
                assert copy.extensions.get_extension_for_oid(oid).value.public_bytes() == want


def test_sessions_without_a_usable_certificate_are_listed_with_the_reason(sessions, replay):
    reasons = {s.id: s.reason for s in replay.plan.skipped}
    assert any("does not speak TLS" in r for r in reasons.values())
    assert any("cannot connect" in r for r in reasons.values())
    malformed = [r for i, r in reasons.items() if i.startswith("malformed-")]
    assert malformed and "cannot be parsed" in malformed[0]
    # A SHA-1 signature cannot be re-made with a fresh key: said, not served wrongly.
    sha1 = {s.id for s in sessions if s.requested_host == "sha1.example.test"}
    weak = [r for i, r in reasons.items() if i in sha1]
    assert weak and "cannot be rebuilt" in weak[0] and "sha1" in weak[0]


def test_a_session_recorded_without_sni_gets_the_recorded_default(sessions, replay):
    no_sni = next(
        s
        for s in sessions
        if s.sni is None
        and s.chain
        and s.sni_probe
        and s.sni_probe.chain
        and s.sni_probe.chain[0] != s.chain[0]
    )
    listener = replay.listener_for(no_sni.id)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only which certificate is sent matters here
    presented = {}
    for sni in (None, no_sni.sni_probe.sni):
        with (
            socket.create_connection(listener.server.address, 5) as raw,
            context.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            presented[sni] = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    recorded_default = x509.load_der_x509_certificate(base64.b64decode(no_sni.chain[0]))
    recorded_probe = x509.load_der_x509_certificate(base64.b64decode(no_sni.sni_probe.chain[0]))
    san = x509.SubjectAlternativeName
    for sni, recorded in ((None, recorded_default), (no_sni.sni_probe.sni, recorded_probe)):
        assert presented[sni].subject == recorded.subject
        assert presented[sni].extensions.get_extension_for_class(san).value == (
            recorded.extensions.get_extension_for_class(san).value
        )
    assert presented[None] != presented[no_sni.sni_probe.sni]


# -- real clients: openssl s_client against the replay, openssl verify against the original ---------


def _verify_args(session: SessionFacts) -> list[str]:
    started = datetime.fromisoformat(session.started)
    host = session.requested_host or ""
    check = ["-verify_ip", host] if _is_ip(host) else ["-verify_hostname", host]
    return ["-attime", str(int(started.timestamp())), *check]


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _first_error(output: str) -> int:
    """OpenSSL's first verification error number in ``output``, 0 if it verified."""
    found = re.search(r"(?:verify error:num=|error )(\d+)(?: at \d+ depth)?", output)
    return int(found.group(1)) if found else 0


def _original_verdict(session: SessionFacts, tmp: Path) -> int:
    pems = [
        x509.load_der_x509_certificate(base64.b64decode(c)).public_bytes(Encoding.PEM)
        for c in session.chain
    ]
    leaf, rest = tmp / "leaf.pem", tmp / "rest.pem"
    leaf.write_bytes(pems[0])
    rest.write_bytes(b"".join(pems[1:]))
    # -purpose sslserver: s_client checks the server purpose (extended key usage) too.
    args = [
        "openssl",
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        str(SAMPLE_CA),
        *_verify_args(session),
    ]
    if len(pems) > 1:
        args += ["-untrusted", str(rest)]
    out = subprocess.run(
        [*args, str(leaf)], check=False, capture_output=True, text=True, timeout=10
    )
    return _first_error(out.stdout + out.stderr)


def _s_client_verdict(session: SessionFacts, replay) -> tuple[int, str]:
    listener = replay.listener_for(session.id)
    sni = ["-servername", session.sni] if session.sni else ["-noservername"]
    starttls = []
    if listener.endpoint.tls_kind == "starttls":
        protocol = listener.endpoint.protocol
        starttls = ["-starttls", "smtp" if protocol == "submission" else protocol]
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{listener.host}:{listener.port}",
            *sni,
            *starttls,
            "-CAfile",
            str(replay.ca_file),
            "-verify_return_error",
            *_verify_args(session),
        ],
        input="",
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    text = out.stdout + out.stderr
    # The handshake got as far as checking the certificate, one way or the other.
    assert (
        "Verify return code: 0 (ok)" in text if out.returncode == 0 else "verify error:num=" in text
    ), text
    return _first_error(text), text


@needs_openssl
def test_openssl_judges_each_replayed_server_as_it_judges_the_original(sessions, replay, tmp_path):
    outcomes = {}
    kinds = set()
    for session in _replayable(sessions, replay):
        original = _original_verdict(session, tmp_path)
        replayed, text = _s_client_verdict(session, replay)
        assert replayed == original, (
            f"{session.requested_host}: original {original}, replay {replayed}\n{text}"
        )
        outcomes[session.requested_host] = replayed
        kinds.add(replay.listener_for(session.id).endpoint.tls_kind)
    # Both outcomes occur: the comparison is not trivially "everything passes".
    assert 0 in outcomes.values() and 62 in outcomes.values() and len(set(outcomes.values())) >= 5


# -- curl, against a live original and against its replay -------------------------------------------

ORIGINAL_NAMES = {
    "good.example.test": {"dns": ["good.example.test"]},
    "wrong.example.test": {"cn": "other.example.net", "dns": ["other.example.net"]},
    "cnonly.example.test": {"cn": "cnonly.example.test"},
    "cnsan.example.test": {"cn": "cnsan.example.test", "dns": ["other.example.test"]},
    "a.b.example.test": {"dns": ["*.example.test"]},
    "example.test": {"dns": ["*.example.test"]},
    "imap2.example.test": {"dns": ["im*.example.test"]},
    "nul.example.test": {"dns": ["nul.example.test\x00.attacker.example"]},
    "expired.example.test": {
        "dns": ["expired.example.test"],
        "not_before": datetime(2020, 1, 1, tzinfo=UTC),
        "not_after": datetime(2021, 1, 1, tzinfo=UTC),
    },
    "future.example.test": {
        "dns": ["future.example.test"],
        "not_before": datetime(2040, 1, 1, tzinfo=UTC),
        "not_after": datetime(2041, 1, 1, tzinfo=UTC),
    },
}


@pytest.fixture(scope="module")
def original_and_replay(tmp_path_factory):
    """A live original IMAPS server (SNI-selected certificates), recorded through the real proxy,
    and its replay: the same clients can be pointed at both."""
    from proxy_fixtures import inprocess_proxy

    from certmatch.lab import pki
    from certmatch.lab.mailservers import CertificateSet, PemIdentity, ServerGroup, ServerSpec

    tmp = tmp_path_factory.mktemp("original")
    root = pki.make_ca("Original Root")
    inter = pki.make_ca("Original Intermediate", parent=root)
    stranger = pki.make_ca("Stranger Intermediate", parent=pki.make_ca("Stranger Root"))
    (tmp / "root.pem").write_bytes(root.cert_pem())

    def pem(issued, chain=None):
        return PemIdentity(chain if chain is not None else issued.chain_pem(), issued.key_pem())

    by_sni = {host: pem(pki.issue_leaf(inter, **names)) for host, names in ORIGINAL_NAMES.items()}
    self_signed = pki.issue_leaf(None, dns=["selfsigned.example.test"])
    by_sni["selfsigned.example.test"] = pem(self_signed)
    by_sni["private.example.test"] = pem(pki.issue_leaf(stranger, dns=["private.example.test"]))
    lonely = pki.issue_leaf(inter, dns=["nointer.example.test"])
    by_sni["nointer.example.test"] = pem(lonely, lonely.cert_pem())
    default = pem(pki.issue_leaf(inter, dns=["mail.example.test"]))
    spec = ServerSpec("imap", "implicit", CertificateSet(default, by_sni))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with ServerGroup([spec]) as servers:
        original = servers[0]
        with inprocess_proxy(
            tmp, f"reverse:tls://127.0.0.1:{original.port}", ca_file=[str(tmp / "root.pem")]
        ) as proxy:
            for host in [*by_sni, None]:
                with (
                    socket.create_connection(("127.0.0.1", proxy.port), 5) as raw,
                    context.wrap_socket(raw, server_hostname=host) as tls,
                ):
                    tls.recv(100)
            recorded = proxy.sessions(len(by_sni) + 1)
        assert len(recorded) == len(by_sni) + 1
        store = TrustStore.load([tmp / "root.pem"], use_system=False)
        with running_replay(recorded, store) as running:
            yield original, tmp / "root.pem", running, [*by_sni, "127.0.0.1"]


def _curl(host: str, port: int, ca: Path) -> tuple[int, str]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(ca),
            "-u",
            "demo:secret",
            "--connect-to",
            f"{host}:{port}:127.0.0.1:{port}",
            f"imaps://{host}:{port}/",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    first = out.stderr.splitlines()[0] if out.stderr else ""
    return out.returncode, first.replace(str(port), "PORT")


@needs_curl
def test_curl_fails_or_passes_against_the_replay_exactly_as_against_the_original(
    original_and_replay,
):
    original, root, replay, hosts = original_and_replay
    port = replay.listeners[0].port
    outcomes = {}
    for host in hosts:
        against_original = _curl(host, original.port, root)
        against_replay = _curl(host, port, replay.ca_file)
        assert against_replay == against_original, host
        outcomes[host] = against_replay[0]
    assert outcomes["good.example.test"] == 0 and outcomes["wrong.example.test"] == 60
    assert len({text for text in outcomes.values()}) >= 2


@needs_openssl
def test_s_client_fails_or_passes_against_the_replay_exactly_as_against_the_original(
    original_and_replay,
):
    original, root, replay, hosts = original_and_replay
    port = replay.listeners[0].port

    def s_client(host: str, target: int, ca: Path) -> int:
        sni = ["-noservername"] if _is_ip(host) else ["-servername", host]
        check = ["-verify_ip", host] if _is_ip(host) else ["-verify_hostname", host]
        out = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{target}",
                *sni,
                *check,
                "-CAfile",
                str(ca),
                "-verify_return_error",
            ],
            input="",
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return _first_error(out.stdout + out.stderr)

    results = {host: s_client(host, port, replay.ca_file) for host in hosts}
    assert results == {host: s_client(host, original.port, root) for host in hosts}
    assert len(set(results.values())) >= 5  # ok, hostname mismatch, expired, self-signed, issuer...


# -- STARTTLS dialogue: sessions recorded with tls_kind "starttls" ------------------------------------


@pytest.fixture(scope="module")
def starttls_replay(sessions, sample_store):
    correct = next(
        s
        for s in sessions
        if s.requested_host == "imap.example.test" and s.sni and not s.client_error
    )
    wrong = next(s for s in sessions if s.requested_host == "wrong.example.test")
    made = []
    for index, protocol in enumerate(("imap", "pop3", "smtp", "ldap", "nntp")):
        for base in (correct, wrong):
            made.append(
                dataclasses.replace(
                    base,
                    id=f"{protocol}-{base.requested_host}",
                    protocol=protocol,
                    tls_kind="starttls",
                    server_address=f"127.0.0.1:{1000 + index}",
                )
            )
    with running_replay(made, sample_store) as running:
        yield running


@needs_openssl
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp", "ldap", "nntp"])
def test_openssl_starttls_reaches_the_replayed_certificate(starttls_replay, protocol):
    listener = starttls_replay.listener_for(f"{protocol}-imap.example.test")
    assert (listener.endpoint.protocol, listener.endpoint.tls_kind) == (protocol, "starttls")
    results = {}
    for host in ("imap.example.test", "wrong.example.test"):
        out = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{listener.port}",
                "-starttls",
                protocol,
                "-servername",
                host,
                "-verify_hostname",
                host,
                "-CAfile",
                str(starttls_replay.ca_file),
            ],
            input="",
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        results[host] = re.search(r"Verify return code: (\d+)", out.stdout)
    assert results["imap.example.test"] and results["imap.example.test"].group(1) == "0"
    assert results["wrong.example.test"] and results["wrong.example.test"].group(1) == "62"


def test_python_clients_complete_a_starttls_session_against_the_replay(starttls_replay):
    listener = starttls_replay.listener_for("imap-imap.example.test")
    context = ssl.create_default_context(cafile=str(starttls_replay.ca_file))

    class Routed(imaplib.IMAP4):
        def _create_socket(self, timeout):
            return socket.create_connection(listener.server.address, timeout)

    imap = Routed("imap.example.test", listener.port)
    imap.starttls(ssl_context=context)  # verifies the name: the replayed certificate matches
    imap.login("demo", "secret")
    imap.select("INBOX")
    _typ, data = imap.fetch("1", "(RFC822)")
    imap.logout()
    assert b"certmatch demo message" in data[0][1]


@needs_curl
def test_curl_requires_tls_through_the_replayed_starttls_dialogue(starttls_replay):
    for protocol, scheme in (("imap", "imap"), ("pop3", "pop3"), ("smtp", "smtp")):
        listener = starttls_replay.listener_for(f"{protocol}-imap.example.test")
        port = listener.port
        base = [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--ssl-reqd",
            "--cacert",
            str(starttls_replay.ca_file),
            "-u",
            "demo:secret",
        ]
        url = f"{scheme}://imap.example.test:{port}/"
        if protocol == "smtp":
            base += ["--mail-from", "a@example.test", "--mail-rcpt", "b@example.test", "-T", "-"]
        ok = subprocess.run(
            [*base, "--connect-to", f"imap.example.test:{port}:127.0.0.1:{port}", url],
            input="Subject: hi\r\n\r\nhello\r\n",
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert ok.returncode == 0, f"{protocol}: {ok.stderr}"
        wrong = listener.endpoint.by_sni and "wrong.example.test"
        bad = subprocess.run(
            [
                *base,
                "--connect-to",
                f"wrong.example.test:{port}:127.0.0.1:{port}",
                url.replace("imap.example.test", str(wrong)),
            ],
            input="x\r\n",
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert bad.returncode == 60, f"{protocol}: {bad.returncode} {bad.stderr}"
        if protocol == "smtp":
            assert listener.server.received and b"hello" in listener.server.received[-1]


def test_replay_json_lists_endpoints_and_the_ca_file(sessions, replay):
    document = replay.to_json()
    json.dumps(document)  # serialisable as is
    assert Path(document["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    ports = {e["port"] for e in document["endpoints"]}
    servers = {(s.server_address, s.tls_kind) for s in _replayable(sessions, replay)}
    assert len(ports) == len(document["endpoints"]) == len(servers)
    main = max(document["endpoints"], key=lambda e: len(e["sni_names"]))
    assert "wrong.example.test" in main["sni_names"] and main["protocol"] == "imap"
    assert not main["default_assumed"]


def test_plan_replay_is_stable_for_repeated_chains(sessions, sample_store):
    plan = plan_replay(sessions + sessions, sample_store)
    assert all(not e.notes for e in plan.endpoints)  # same chain twice is not a "change"
    main = max(plan.endpoints, key=lambda e: len(e.by_sni))
    # One recorded intermediate, rebuilt once: every chain that sent it sends the same copy.
    intermediates = {
        c.certificates[1].public_bytes(Encoding.DER)
        for c in main.by_sni.values()
        if len(c.certificates) == 2
        and "Sample Intermediate" in c.certificates[1].subject.rfc4514_string()
    }
    assert len(intermediates) == 1
