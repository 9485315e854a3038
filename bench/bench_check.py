"""How fast ``certmatch check`` judges a large recording, against the cost of merely parsing it.

    uv run python bench/bench_check.py [--sessions 20000] [--repeat 3]

Builds a recording of N sessions by cycling through the sample recordings
(every cause, real captured chains), then times, in one run and as medians
of --repeat runs: json.loads of every line (the floor), reading with schema
validation (certmatch.core.recording), and reading plus diagnosing every
session with one Judge per run (what ``check`` does, less printing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from certmatch.core.judge import Judge
from certmatch.core.recording import iter_recording
from certmatch.core.trust import TrustStore

SAMPLES = REPO / "recordings"


def build(path: Path, n: int) -> None:
    header, sessions = None, []
    for sample in sorted(SAMPLES.glob("*.jsonl")):
        lines = sample.read_text().splitlines()
        header = header or lines[0]
        sessions += [json.loads(line) for line in lines[1:]]
    with path.open("w") as out:
        out.write(header + "\n")
        for i in range(n):
            session = dict(sessions[i % len(sessions)])
            session["id"] = f"bench-{i:08d}"
            out.write(json.dumps(session, separators=(",", ":")) + "\n")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp()) / "large.jsonl"
    build(path, args.sessions)
    store = TrustStore.load([SAMPLES / "ca.pem"])

    def parse_only() -> None:
        with path.open() as f:
            for line in f:
                json.loads(line)

    def read_validated() -> None:
        for _ in iter_recording(path):
            pass

    def read_and_diagnose() -> None:
        judge = Judge(store)  # as `check` does: one judge per run, its caches start empty
        for item in iter_recording(path):
            if not hasattr(item, "message"):
                judge.diagnose(item)

    results = {}
    for name, fn in [
        ("json.loads only", parse_only),
        ("read + schema", read_validated),
        ("read + schema + diagnose", read_and_diagnose),
    ]:
        results[name] = statistics.median(timed(fn) for _ in range(args.repeat))
    floor = results["json.loads only"]
    print(
        f"{args.sessions} sessions ({path.stat().st_size / 1e6:.1f} MB), median of {args.repeat} runs"
    )
    print(f"{'step':<28}{'seconds':>9}{'µs/session':>12}{'x floor':>9}")
    for name, seconds in results.items():
        print(
            f"{name:<28}{seconds:>9.2f}{seconds / args.sessions * 1e6:>12.0f}{seconds / floor:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
