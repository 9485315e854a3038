"""Write a big synthetic recording for benchmarking the TUI.

    .venv/bin/python bench/make_large_recording.py /tmp/big.jsonl --sessions 100000

Writes OUT (a valid certmatch recording) and OUT.ca.pem (the root CA that
signed the certificates, to pass as --ca-file). The sessions mix matching
hosts with every common cause (wrong host, wildcard too deep and apex,
CN-only, expired, self-signed, missing intermediate, no SNI, no server), so
roughly half fail, over a few hundred host names and many clients, as a busy
proxy would record them.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from certmatch.core.facts import RecordingHeader, SessionFacts
from certmatch.lab.pki import Issued, issue_leaf, make_ca

UTC = dt.UTC
START = dt.datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
VALID = {
    "not_before": dt.datetime(2025, 1, 1, tzinfo=UTC),
    "not_after": dt.datetime(2030, 1, 1, tzinfo=UTC),
}
PROTOCOLS = (("imap", 993), ("pop3", 995), ("submission", 465), ("smtp", 25), ("ldap", 636))


def _b64(issued: Issued, *, intermediate: bool = True) -> list[str]:
    certs = issued.chain() if intermediate else [issued.cert]
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii") for c in certs]


def _kinds(root: Issued) -> list[tuple[str, list[str], bool]]:
    """(host pattern, chain, sends SNI): ``{d}`` in the pattern is replaced by a domain."""
    inter = make_ca("certmatch bench intermediate", parent=root, **VALID)
    kinds: list[tuple[str, list[str], bool]] = []
    for domain_index in range(20):
        d = f"example{domain_index}.test"
        default = issue_leaf(
            inter, cn=f"mail.{d}", dns=[f"mail.{d}", f"imap.{d}", f"smtp.{d}"], **VALID
        )
        wildcard = issue_leaf(inter, dns=[f"*.{d}"], **VALID)
        kinds += [
            (f"mail.{d}", _b64(default), True),
            (f"imap.{d}", _b64(default), True),
            (f"smtp.{d}", _b64(default), True),
            (f"wrong.{d}", _b64(issue_leaf(inter, dns=["other.example.net"], **VALID)), True),
            (f"a.b.{d}", _b64(wildcard), True),
            (d, _b64(wildcard), True),
            (f"cnonly.{d}", _b64(issue_leaf(inter, cn=f"cnonly.{d}", **VALID)), True),
            (
                f"expired.{d}",
                _b64(
                    issue_leaf(
                        inter,
                        dns=[f"expired.{d}"],
                        not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
                        not_after=dt.datetime(2021, 1, 1, tzinfo=UTC),
                    )
                ),
                True,
            ),
            (f"self.{d}", _b64(issue_leaf(None, dns=[f"self.{d}"], **VALID)), True),
            (
                f"nointer.{d}",
                _b64(issue_leaf(inter, dns=[f"nointer.{d}"], **VALID), intermediate=False),
                True,
            ),
            (f"alt.{d}", _b64(default), False),
            (f"down.{d}", [], True),
        ]
    return kinds


def sessions(
    count: int, kinds: list[tuple[str, list[str], bool]], seed: int
) -> Iterator[dict[str, Any]]:
    """``count`` session lines as dicts, one second apart from START."""
    rng = random.Random(seed)
    # Matching hosts are the most common, as in real traffic.
    weights = [6 if i % 12 < 3 else 1 for i in range(len(kinds))]
    choices = rng.choices(range(len(kinds)), weights=weights, k=count)
    for number, kind_index in enumerate(choices):
        host, chain, sends_sni = kinds[kind_index]
        protocol, port = PROTOCOLS[number % len(PROTOCOLS)]
        facts = SessionFacts(
            id=f"s{number:08d}",
            started=(START + dt.timedelta(seconds=number)).isoformat(),
            client_address=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}:{rng.randrange(1024, 65535)}",
            proxy_mode="socks5",
            protocol=protocol,
            requested_host=host,
            requested_host_source="socks5",
            sni=host if sends_sni else None,
            server_address=f"{host}:{port}",
            upstream_sni=host if sends_sni else None,
            tls_version="TLSv1.3" if chain else None,
            chain=chain,
            server_error=None if chain else "connection refused",
        )
        yield facts.to_json()


def write(path: Path, count: int, seed: int = 1) -> Path:
    """Write the recording and its root CA; return the CA file's path."""
    root = make_ca("certmatch bench root", **VALID)
    kinds = _kinds(root)
    ca_path = path.with_name(path.name + ".ca.pem")
    ca_path.write_bytes(root.cert_pem())
    header = RecordingHeader(tool_version="bench", created=START.isoformat())
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps(header.to_json(), separators=(",", ":")) + "\n")
        for data in sessions(count, kinds, seed):
            out.write(json.dumps(data, separators=(",", ":")) + "\n")
    return ca_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="recording file to write (overwritten)")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    ca_path = write(args.out, args.sessions, args.seed)
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.sessions:,} sessions ({size:.0f} MB) to {args.out}; root CA: {ca_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
