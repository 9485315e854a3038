"""A certificate cryptography cannot parse is described in plain words, not in the Rust debug
notation of its parser (``ParseError { kind: ShortData { needed: 411 } }``)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core.certificates import parse_chain, plain_parse_error
from certmatch.lab.pki import issue_leaf

pytestmark = pytest.mark.pure


@pytest.fixture(scope="module")
def der() -> bytes:
    return issue_leaf(None, cn="mail.example.test", dns=["mail.example.test"]).cert.public_bytes(
        Encoding.DER
    )


def _error(der: bytes) -> str:
    summary = parse_chain([base64.b64encode(der).decode("ascii")]).summaries[0]
    assert summary.error is not None
    return summary.error


def test_a_cut_certificate_says_how_much_is_missing(der: bytes) -> None:
    error = _error(der[:100])
    assert error == (
        "leaf certificate: not a certificate cryptography can parse: "
        f"it ends {len(der) - 100} bytes too early (cut short)"
    )


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda d: d + b"\x00", "there are bytes after its end"),
        (lambda d: b"\x31" + d[1:], "a field has an unexpected ASN.1 type (tag 17)"),
    ],
)
def test_other_parse_errors_are_plain_words(der: bytes, mangle, expected: str) -> None:
    error = _error(mangle(der))
    assert error.endswith(f"parse: {expected}")
    for rust in ("ParseError", "kind:", "{", "}"):
        assert rust not in error


def test_a_bad_field_is_named_as_rfc_5280_names_it() -> None:
    text = (
        'error parsing asn1 value: ParseError { kind: InvalidValue, location: ["Certificate::'
        'tbs_cert", "TbsCertificate::validity", "Validity::not_before", "Time::UtcTime"] }'
    )
    assert plain_parse_error(text) == (
        "a value is not valid, in tbsCertificate.validity.notBefore.UTCTime"
    )


def test_an_unknown_kind_is_still_words_and_other_text_is_kept() -> None:
    assert plain_parse_error("error parsing asn1 value: ParseError { kind: SomeNewKind }") == (
        "some new kind"
    )
    assert plain_parse_error("Unsupported public key algorithm") == (
        "Unsupported public key algorithm"
    )
