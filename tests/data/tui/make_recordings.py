"""Regenerate the TUI test recordings in this directory (run once; the output is committed).

    .venv/bin/python tests/data/tui/make_recordings.py

Certificates get fresh keys each run, so rerunning changes every fingerprint
and the snapshot tests must then be updated (pytest --snapshot-update).
Validity dates and session times are fixed, so the verdicts never change
with the day the tests run.

Writes ``root.pem`` (the trust anchor to pass as a CA file, with the
system store off) and ``sample.jsonl``: one session per common cause plus
matching sessions, with fixed ids, times and clients.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core.facts import RecordingHeader, SessionFacts
from certmatch.lab.pki import Issued, issue_leaf, make_ca

HERE = Path(__file__).resolve().parent
UTC = dt.UTC
VALID = {
    "not_before": dt.datetime(2025, 1, 1, tzinfo=UTC),
    "not_after": dt.datetime(2035, 1, 1, tzinfo=UTC),
}
START = dt.datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)


def _b64(issued: Issued | None, *, intermediate: bool = True) -> list[str]:
    if issued is None:
        return []
    certs = issued.chain() if intermediate else [issued.cert]
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii") for c in certs]


def main() -> None:
    root = make_ca("certmatch test root", **VALID)
    inter = make_ca("certmatch test intermediate", parent=root, **VALID)
    default = issue_leaf(
        inter,
        cn="mail.example.test",
        dns=["mail.example.test", "imap.example.test", "smtp.example.test"],
        **VALID,
    )
    wildcard = issue_leaf(inter, dns=["*.example.test"], **VALID)
    wrong = issue_leaf(inter, dns=["other.example.net"], **VALID)
    cases: list[tuple[str, str, str | None, Issued | None, dict[str, object]]] = [
        # (protocol, requested host, sni, certificate, other facts)
        ("imap", "imap.example.test", "imap.example.test", default, {}),
        ("imap", "wrong.example.test", "wrong.example.test", wrong, {}),
        ("imap", "a.b.example.test", "a.b.example.test", wildcard, {}),
        ("submission", "example.test", "example.test", wildcard, {}),
        (
            "pop3",
            "cnonly.example.test",
            "cnonly.example.test",
            issue_leaf(inter, cn="cnonly.example.test", **VALID),
            {},
        ),
        (
            "imap",
            "cnsan.example.test",
            "cnsan.example.test",
            issue_leaf(inter, cn="cnsan.example.test", dns=["other.example.test"], **VALID),
            {},
        ),
        (
            "smtp",
            "expired.example.test",
            "expired.example.test",
            issue_leaf(
                inter,
                dns=["expired.example.test"],
                not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
                not_after=dt.datetime(2021, 1, 1, tzinfo=UTC),
            ),
            {},
        ),
        (
            "imap",
            "self.example.test",
            "self.example.test",
            issue_leaf(None, dns=["self.example.test"], **VALID),
            {},
        ),
        ("ldap", "alt.example.test", None, default, {}),
        ("imap", "192.0.2.10", None, default, {}),
        ("submission", "smtp.example.test", "smtp.example.test", default, {}),
        (
            "pop3",
            "down.example.test",
            "down.example.test",
            None,
            {"server_error": "connection refused"},
        ),
        (
            "imap",
            "example.com",
            "example.com",
            issue_leaf(inter, dns=["mail.example.com"], **VALID),
            {},
        ),
        ("imap", "wrong.example.test", "wrong.example.test", wrong, {}),
    ]
    missing_intermediate = issue_leaf(inter, dns=["nointer.example.test"], **VALID)
    lines = [RecordingHeader(tool_version="test", created=START.isoformat()).to_json()]
    for number, (protocol, host, sni, cert, extra) in enumerate(cases):
        port = {"imap": 993, "pop3": 995, "submission": 465, "smtp": 25, "ldap": 636}[protocol]
        facts = SessionFacts(
            id=f"t{number:03d}",
            started=(START + dt.timedelta(seconds=number)).isoformat(),
            client_address=f"127.0.0.1:{50000 + number}",
            proxy_mode="socks5",
            protocol=protocol,
            requested_host=host,
            requested_host_source="socks5",
            sni=sni,
            server_address=f"{host}:{port}",
            upstream_sni=sni,
            tls_version="TLSv1.3" if cert else None,
            chain=_b64(cert),
            **extra,  # type: ignore[arg-type]
        )
        lines.append(facts.to_json())
    nointer = SessionFacts(
        id=f"t{len(cases):03d}",
        started=(START + dt.timedelta(seconds=len(cases))).isoformat(),
        client_address="127.0.0.1:49999",
        protocol="imap",
        requested_host="nointer.example.test",
        requested_host_source="sni",
        sni="nointer.example.test",
        server_address="nointer.example.test:993",
        upstream_sni="nointer.example.test",
        tls_version="TLSv1.3",
        chain=_b64(missing_intermediate, intermediate=False),
    )
    lines.append(nointer.to_json())
    (HERE / "root.pem").write_bytes(root.cert_pem())
    with (HERE / "sample.jsonl").open("w", encoding="utf-8") as out:
        for data in lines:
            out.write(json.dumps(data, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
