"""Generate the README screenshot of the TUI from a recording.

    .venv/bin/python scripts/screenshot.py                      # the test sample recording
    .venv/bin/python scripts/screenshot.py recordings/x.jsonl --ca-file ca.pem --out docs/tui.svg

Runs the app headless on the recording, waits until it is loaded, selects
the first failing session and writes an SVG (what GitHub shows in a README).
With --png, also converts it with rsvg-convert when that program is installed
(Debian: librsvg2-bin).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from certmatch.core.recording import RecordingError, expand_paths
from certmatch.core.trust import TrustStore, TrustStoreError
from certmatch.tui.app import CertmatchApp
from certmatch.tui.model import Filter

DEFAULT_RECORDING = Path("tests/data/tui/sample.jsonl")
DEFAULT_CA = Path("tests/data/tui/root.pem")


async def capture(
    app: CertmatchApp, out: Path, size: tuple[int, int], filter_text: str, keys: list[str]
) -> None:
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 60
        while not app.sessions.initial_load_done:
            if time.monotonic() > deadline:
                raise SystemExit("screenshot: the recording did not load within 60 s")
            await pilot.pause(0.05)
        if filter_text:
            app.sessions.filter = Filter.parse(filter_text)
            app.sessions.rebuild()
        if keys:
            await pilot.press(*keys)
        await pilot.pause()
        out.parent.mkdir(parents=True, exist_ok=True)
        app.save_screenshot(filename=out.name, path=str(out.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", nargs="?", type=Path, default=None)
    parser.add_argument(
        "--ca-file", action="append", default=None, help="CA to trust (default: the sample's)"
    )
    parser.add_argument(
        "--system-store", action="store_true", help="also trust the system CA store"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tui.svg")
    parser.add_argument("--size", default="150x42", help="terminal COLUMNSxLINES (default 150x42)")
    parser.add_argument("--filter", default="", help="a filter to apply first, as typed after f")
    parser.add_argument(
        "--keys", default="", help="keys to press first, comma-separated (e.g. j,j,enter)"
    )
    parser.add_argument("--png", action="store_true", help="also write a PNG next to the SVG")
    args = parser.parse_args(argv)

    recording = args.recording
    ca_files = args.ca_file
    if recording is None:
        # Run from the repository so the path shown in the screenshot is short and stable.
        import os

        os.chdir(REPO)
        recording = DEFAULT_RECORDING
        ca_files = ca_files or [str(DEFAULT_CA)]
    try:
        store = TrustStore.load(ca_files or [], use_system=args.system_store or not ca_files)
        paths = expand_paths([recording])
    except (RecordingError, TrustStoreError) as error:
        print(f"screenshot: {error}", file=sys.stderr)
        return 2
    columns, _, lines = args.size.partition("x")
    app = CertmatchApp(paths, store=store)
    keys = [k for k in args.keys.split(",") if k]
    out = args.out.resolve()
    asyncio.run(capture(app, out, (int(columns), int(lines)), args.filter, keys))
    print(f"wrote {out}")
    if args.png:
        converter = shutil.which("rsvg-convert")
        if converter is None:
            print(
                "screenshot: no PNG: rsvg-convert is not installed (apt-get install librsvg2-bin)",
                file=sys.stderr,
            )
            return 1
        png = out.with_suffix(".png")
        subprocess.run([converter, str(out), "-o", str(png)], check=True)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
