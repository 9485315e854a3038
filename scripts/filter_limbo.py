"""Pick x509-limbo's test cases that bear on certmatch and write them to tests/data/limbo/.

    uv run python scripts/filter_limbo.py LIMBO_JSON --commit SHA [--license LICENSE]

LIMBO_JSON is x509-limbo's generated test suite (``limbo.json``, as its
``limbo compile`` writes it) at commit SHA of https://github.com/C2SP/x509-limbo.
x509-limbo is Apache-2.0; pass its LICENSE file with ``--license`` to copy it
beside the cases.

certmatch judges what a mail client checks of a server: the server's name
(DNS-ID, IP-ID, wildcards, CN fallback, NUL, IDN) and the path to a trusted
root (missing, extra and misordered intermediates, depth, loops, validity,
basicConstraints, pathLenConstraint, name constraints, key usage and
serverAuth, critical extensions, key and signature algorithms). So it keeps
every case a server is validated in, except:

- ``crl::``: revocation; certmatch fetches no CRL and judges none.
- client validation (``validation_kind`` CLIENT) and cases that require the
  clientAuth usage: they validate a client's certificate, often by e-mail address.
- a failure that comes only from a depth limit the harness sets below certmatch's
  (``max_chain_depth``): certmatch's limit is fixed (trust.MAX_CHAIN_DEPTH).
- ``bettertls::`` and ``online::``: thousands of generated name-constraint cases
  and captured web chains; the hand-written namespaces already cover those rules.

The output keeps limbo's own fields (id, description, certificates, validation
time, expected result and peer name) untouched, one case per line, in limbo's order.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from certmatch.core.trust import MAX_CHAIN_DEPTH

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "limbo"
CASES_FILE = "limbo-server.json"
SKIPPED_NAMESPACES = ("crl", "bettertls", "online")


def why_left_out(case: dict[str, Any]) -> str | None:
    """Why certmatch has no use for ``case``, or None to keep it."""
    namespace = case["id"].split("::", 1)[0]
    if namespace in SKIPPED_NAMESPACES:
        return f"{namespace}:: namespace"
    if case["validation_kind"] != "SERVER":
        return "validates a client certificate"
    if "clientAuth" in (case.get("extended_key_usage") or []):
        return "requires the clientAuth usage"
    depth = case.get("max_chain_depth")
    if depth is not None and depth < MAX_CHAIN_DEPTH and case["expected_result"] == "FAILURE":
        return f"fails only under the harness's depth limit, below certmatch's {MAX_CHAIN_DEPTH}"
    return None


def filter_cases(suite: dict[str, Any]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The cases kept, in limbo's order, and how many were left out for each reason."""
    kept: list[dict[str, Any]] = []
    left_out: Counter[str] = Counter()
    for case in suite["testcases"]:
        reason = why_left_out(case)
        if reason is None:
            kept.append(case)
        else:
            left_out[reason] += 1
    return kept, left_out


def render(kept: list[dict[str, Any]], commit: str) -> str:
    """The output file: a limbo suite (version 1) with its source, one case per line."""
    header = {
        "version": 1,
        "source": f"https://github.com/C2SP/x509-limbo/tree/{commit}",
        "license": "Apache-2.0 (see LICENSE beside this file); filtered by scripts/filter_limbo.py",
    }
    head = json.dumps(header, ensure_ascii=False)[:-1]
    lines = ",\n".join(json.dumps(case, ensure_ascii=False, sort_keys=True) for case in kept)
    return f'{head}, "testcases": [\n{lines}\n]}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("limbo_json", type=Path, help="x509-limbo's limbo.json")
    parser.add_argument("--commit", required=True, help="the x509-limbo commit it was built from")
    parser.add_argument("--license", type=Path, help="x509-limbo's LICENSE file, copied beside")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"default {OUT_DIR}")
    args = parser.parse_args(argv)
    try:
        suite = json.loads(args.limbo_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"filter_limbo: cannot read {args.limbo_json}: {exc}", file=sys.stderr)
        return 2
    if suite.get("version") != 1 or not isinstance(suite.get("testcases"), list):
        print(f"filter_limbo: {args.limbo_json} is not a version 1 limbo suite", file=sys.stderr)
        return 2
    kept, left_out = filter_cases(suite)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CASES_FILE).write_text(render(kept, args.commit), encoding="utf-8")
    if args.license:
        shutil.copyfile(args.license, args.out / "LICENSE")
    namespaces = Counter(case["id"].split("::", 1)[0] for case in kept)
    print(
        f"kept {len(kept)} of {len(suite['testcases'])} cases: {dict(sorted(namespaces.items()))}"
    )
    for reason, count in sorted(left_out.items()):
        print(f"  left out {count}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
