"""Parsing recorded chains: real minted certificates and hostile input."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID
from hypothesis import given, settings
from hypothesis import strategies as st

from certmatch.core.certificates import parse_chain, to_pem
from certmatch.lab.pki import Issued, issue_leaf, make_ca

pytestmark = pytest.mark.pure


def b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = make_ca("Summary Root")
    inter = make_ca("Summary Inter", parent=root)
    leaf = issue_leaf(
        inter,
        cn="mail.example.net",
        dns=["mail.example.net", "imap.example.net"],
        ips=["192.0.2.7", "2001:db8::7"],
    )
    return {"root": root, "inter": inter, "leaf": leaf}


def test_summary_of_a_minted_leaf(pki: dict[str, Issued]) -> None:
    cert = pki["leaf"].cert
    parsed = parse_chain([b64(cert), b64(pki["inter"].cert)])
    leaf = parsed.summaries[0]
    der = cert.public_bytes(Encoding.DER)
    assert parsed.leaf == cert
    assert parsed.errors == ()
    assert leaf.index == 0 and leaf.error is None
    assert leaf.subject == cert.subject.rfc4514_string()
    assert leaf.issuer == pki["inter"].cert.subject.rfc4514_string()
    assert leaf.dns_names == ("mail.example.net", "imap.example.net")
    assert leaf.ip_addresses == ("192.0.2.7", "2001:db8::7")
    assert leaf.common_names == ("mail.example.net",)
    assert leaf.sha256 == colon_hex(hashlib.sha256(der).digest())
    assert leaf.sha1 == colon_hex(cert.fingerprint(hashes.SHA1()))
    assert int(leaf.serial, 16) == cert.serial_number
    assert leaf.not_before == cert.not_valid_before_utc
    assert leaf.not_before is not None and leaf.not_before.utcoffset() == dt.timedelta(0)
    assert leaf.not_after == cert.not_valid_after_utc
    assert not leaf.is_ca and not leaf.self_issued


def test_ca_flags(pki: dict[str, Issued]) -> None:
    parsed = parse_chain([b64(pki["inter"].cert), b64(pki["root"].cert)])
    inter, root = parsed.summaries
    assert (inter.index, inter.is_ca, inter.self_issued) == (0, True, False)
    assert (root.index, root.is_ca, root.self_issued) == (1, True, True)


def test_cn_only_certificate_has_no_alt_names() -> None:
    cert = issue_leaf(None, cn="legacy.example").cert
    summary = parse_chain([b64(cert)]).summaries[0]
    assert summary.dns_names == () and summary.ip_addresses == ()
    assert summary.common_names == ("legacy.example",)
    assert summary.self_issued and summary.error is None


def test_garbage_der_keeps_fingerprint_of_what_was_sent(pki: dict[str, Issued]) -> None:
    garbage = b"\x30\x82\x01\x00not a certificate at all"
    parsed = parse_chain([b64(pki["leaf"].cert), base64.b64encode(garbage).decode()])
    assert parsed.certificates[0] is not None and parsed.certificates[1] is None
    bad = parsed.summaries[1]
    assert bad.subject == "" and bad.not_after is None
    assert bad.sha256 == colon_hex(hashlib.sha256(garbage).digest())
    assert bad.error is not None and bad.error.startswith("certificate 1:")
    assert parsed.errors == (bad.error,)


def test_truncated_der_is_an_error_entry(pki: dict[str, Issued]) -> None:
    der = pki["leaf"].cert.public_bytes(Encoding.DER)[:-20]
    parsed = parse_chain([base64.b64encode(der).decode()])
    assert parsed.leaf is None
    assert parsed.summaries[0].error is not None
    assert "leaf certificate" in parsed.summaries[0].error
    assert parsed.summaries[0].sha1 == colon_hex(hashlib.sha1(der).digest())


@pytest.mark.parametrize("text", ["%%% not base64 %%%", "abc", "", None])
def test_bad_base64_is_an_error_not_an_exception(text: object) -> None:
    parsed = parse_chain([text])  # type: ignore[list-item]
    summary = parsed.summaries[0]
    assert parsed.certificates == (None,)
    assert summary.error is not None and "\n" not in summary.error
    assert summary.sha256 == "" and summary.subject == ""


def test_lazily_failing_extension_is_caught(pki: dict[str, Issued]) -> None:
    """The certificate loads, but its subjectAltName bytes are not DER."""
    ca = pki["inter"]
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "broken-san.example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(pki["leaf"].key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05junk"),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    parsed = parse_chain([b64(cert)])
    summary = parsed.summaries[0]
    assert parsed.leaf is not None  # the certificate itself parsed
    assert summary.subject == "CN=broken-san.example"
    assert summary.error is not None and "extensions" in summary.error
    assert summary.dns_names == ()


def test_empty_chain() -> None:
    parsed = parse_chain([])
    assert parsed.leaf is None and parsed.summaries == () and parsed.errors == ()


def test_pem_export_round_trips_and_marks_what_it_left_out(pki: dict[str, Issued]) -> None:
    certs = [pki["leaf"].cert, pki["inter"].cert]
    pem = to_pem([b64(certs[0]), "!!!", b64(certs[1])])
    loaded = x509.load_pem_x509_certificates(pem.encode())
    assert [c.public_bytes(Encoding.DER) for c in loaded] == [
        c.public_bytes(Encoding.DER) for c in certs
    ]
    assert "certificate 1 left out" in pem
    body = [line for line in pem.splitlines() if "-" not in line and "left out" not in line]
    assert body and all(len(line) <= 64 for line in body)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40), st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
        ),
        max_size=4,
    )
)
def test_parse_chain_never_raises(chain: list[str]) -> None:
    parsed = parse_chain(chain)
    assert len(parsed.certificates) == len(parsed.summaries) == len(chain)
    assert [s.index for s in parsed.summaries] == list(range(len(chain)))


def test_a_zero_serial_is_shown_without_a_warning_on_stderr() -> None:
    """x509-limbo rfc5280::serial::zero: cryptography warns when the serial is read; the summary
    shows it ("00") and nothing reaches stderr."""
    suite = Path(__file__).parent / "data" / "limbo" / "limbo-server.json"
    case = next(
        c for c in json.loads(suite.read_text())["testcases"] if c["id"] == "rfc5280::serial::zero"
    )
    body = "".join(case["peer_certificate"].strip().splitlines()[1:-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chain = parse_chain([body])
    assert chain.summaries[0].serial == "00" and chain.summaries[0].error is None
    assert caught == []
