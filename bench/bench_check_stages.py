"""Where ``certmatch check`` spends its time, stage by stage, and A/B runs of code trees.

    uv run --frozen python bench/bench_check_stages.py [--sessions 100000] [--repeat 3]
        [--steps parse,read,judge,line,check,json] [--code NAME=DIR ...] [--file PATH] [--dns]

Builds the recording as ``bench_check.py`` does (the samples cycled; ``--dns``: DNS facts on
every session) unless --file names one, then runs each step in a fresh child process, interleaved --repeat times, and prints
the median CPU seconds, µs per session and the ratio to parse-only. Each step does the
previous one's work and more, so the differences are the stages' own costs:

* ``parse``: ``json.loads`` of every line, read in binary (the floor);
* ``read``: :func:`certmatch.core.recording.iter_with_header`: decode, parse, validate
  against the schema's fast path, build ``SessionFacts``;
* ``judge``: ``read`` and ``Judge.judgement`` for each session (the key, the cached
  judgement);
* ``line``: ``judge`` and the one-line text ``check`` prints (``report.session_line``),
  not written;
* ``check``: :func:`certmatch.cli.check.check`, output to /dev/null;
* ``json``: ``check --json``, output to /dev/null.

``--code NAME=DIR`` (repeatable) runs the steps once per code tree (the first tree every
step but ``parse``, the others the --compare-steps), with ``PYTHONPATH=DIR``, side by side: the way to measure a proposed change against the code
it changes (a copy of the checkout with the change applied) without committing it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_check import build

_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
step, path, ca = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if step == "parse":
    start = time.process_time()
    with path.open("rb") as file:
        for line in file:
            json.loads(line)
else:
    import certmatch
    from certmatch.core.trust import TrustStore
    from certmatch.core.recording import iter_with_header
    from certmatch.core.judge import Judge
    from certmatch.core import report
    from certmatch.cli import check as check_module
    store = TrustStore.load([ca])
    sys.stdout = open(os.devnull, "w", encoding="utf-8")
    sys.stderr = open(os.devnull, "w", encoding="utf-8")
    start = time.process_time()
    if step in ("check", "json"):
        check_module.check([path], store, json_output=step == "json")
        sys.stdout.flush()
    else:
        header, items = iter_with_header(path)
        judge = Judge(store)
        for item in items:
            if step == "read":
                continue
            j = judge.judgement(item)
            if step == "line":
                report.session_line(check_module._for_one_line(item, j))
seconds = time.process_time() - start
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sys.__stdout__.write(json.dumps({"seconds": seconds, "rss_mb": rss_mb}) + "\n")
"""


def run_step(step: str, path: Path, code: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, step, str(path), str(REPO / "recordings" / "ca.pem")],
        capture_output=True,
        text=True,
        check=False,
        cwd=code or REPO,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"step {step} ({code}) failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", default="parse,read,judge,line,check,json")
    parser.add_argument("--code", action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument(
        "--compare-steps",
        default="check,json",
        help="the steps run for every --code tree after the first (the first runs all)",
    )
    parser.add_argument("--file", type=Path, help="an existing recording instead of building one")
    parser.add_argument("--dns", action="store_true", help="DNS facts on every session")
    args = parser.parse_args()
    steps = args.steps.split(",")
    compared = set(args.compare_steps.split(","))
    trees: list[tuple[str, Path | None]] = [
        (name, Path(directory).resolve())
        for name, _, directory in (c.partition("=") for c in args.code)
    ] or [("", None)]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "bench.jsonl"
        if args.file is None:
            build(path, args.sessions, args.dns)
        with path.open("rb") as file:
            n = sum(1 for _ in file) - 1
        size = path.stat().st_size
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        load = []
        for _ in range(args.repeat):  # interleaved, so a busy moment hits every step alike
            for step in steps:
                for name, code in [("", None)] if step == "parse" else trees:
                    if step != "parse" and name != trees[0][0] and step not in compared:
                        continue
                    runs.setdefault((step, name), []).append(run_step(step, path, code))
            load.append(Path("/proc/loadavg").read_text().split()[0])
    floor = (
        statistics.median(r["seconds"] for r in runs.get(("parse", ""), []))
        if ("parse" in steps)
        else None
    )
    print(
        f"{n:,} sessions ({size / 1e6:.0f} MB), median of {args.repeat}, "
        f"CPU time; 1-min load average after each repeat: {', '.join(load)}"
    )
    print(
        f"  {'step':<10}{'code':<14}{'seconds':>9}{'µs/session':>12}{'x parse':>9}{'peak RSS':>11}"
    )
    for (step, name), results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        ratio = f"{floor / seconds:>9.3f}" if floor else f"{'':>9}"
        rss = max(r["rss_mb"] for r in results)
        print(
            f"  {step:<10}{name:<14}{seconds:>9.2f}{seconds * 1e6 / n:>12.1f}{ratio}{rss:>8.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
