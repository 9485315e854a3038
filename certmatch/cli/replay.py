"""``certmatch replay``: serve the recorded servers on loopback until Ctrl-C.

The servers are :mod:`certmatch.lab.replay`'s, imported inside the command; this module
prints where they listen and which CA file to trust.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certmatch.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_recording_paths,
    add_trust_options,
    recording_paths,
)
from certmatch.core.anchors import RecordingAnchors, load_anchors
from certmatch.core.facts import SessionFacts
from certmatch.core.identity import PresentedIdentifiers
from certmatch.core.report import shown_prose
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore

if TYPE_CHECKING:
    from certmatch.lab.replay import RunningReplay


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "replay",
        help="serve the recorded servers offline, for a client under test",
        description="For each recorded server, listen on loopback and present certificate chains of "
        "the same shape (names, dates, chain length and order, self-signedness), re-signed by a "
        "local replay CA, speaking the recorded protocol through the handshake (STARTTLS "
        "included). The client's SNI selects the certificate, as on the original. Prints the "
        "endpoints and the CA file to trust; Ctrl-C stops.",
    )
    add_recording_paths(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the endpoints as one JSON document"
    )
    parser.add_argument(
        "--listen-host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, loopback only)",
    )
    add_trust_options(parser)  # which issuers the original chains were trusted by, as for check
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_replay(
        args.paths,
        json_output=args.json,
        listen_host=args.listen_host,
        ca_files=args.ca_file,
        use_system_store=not args.no_system_store,
        use_recorded_ca=not args.ignore_recorded_ca,
    )


def run_replay(
    paths: Sequence[str | Path],
    *,
    json_output: bool,
    listen_host: str,
    ca_files: Sequence[str | Path] = (),
    use_system_store: bool = True,
    use_recorded_ca: bool = True,
    ready: Callable[[RunningReplay], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve the recorded servers until Ctrl-C (or ``stop``); the command's exit status.

    ``ca_files`` are the CAs the original chains were trusted by (as for
    ``check --ca-file``), beside the ones each recording's header records (unless
    ``use_recorded_ca`` is off), which count for that recording's sessions only.
    ``ready`` and ``stop`` let a caller drive it in a thread.
    """
    from certmatch.lab.replay import load_recordings, running_replay

    anchors = RecordingAnchors(
        load_anchors(ca_files, use_system=use_system_store), use_recorded=use_recorded_ca
    )
    sessions: list[SessionFacts] = []
    stores: list[TrustStore] = []
    files, notes = recording_paths([str(p) for p in paths], "replay")
    for note in notes:
        print(f"certmatch replay: note: {shown_prose(note)}", file=sys.stderr)
    for recording in load_recordings(files):
        store, recorded = anchors.store_for(recording.header.ca_certificates)
        unreadable = recorded.problem(recording.path)
        if unreadable is not None:
            print(f"certmatch replay: warning: {shown_prose(unreadable)}", file=sys.stderr)
        sessions += recording.sessions
        stores += [store] * len(recording.sessions)
    if not sessions:
        print("certmatch replay: the recordings hold no sessions to replay.", file=sys.stderr)
        return EXIT_USAGE
    stop = stop or threading.Event()
    with running_replay(sessions, anchors.base, listen_host=listen_host, stores=stores) as replay:
        if not replay.listeners:
            print(
                "certmatch replay: no recorded session has a certificate to replay:",
                file=sys.stderr,
            )
            for skipped in replay.plan.skipped:
                print(f"  {printable(skipped.id)}: {shown_prose(skipped.reason)}", file=sys.stderr)
            return EXIT_FAILED
        if json_output:
            print(json.dumps(replay.to_json(), indent=2, ensure_ascii=True), flush=True)
        else:
            print(format_replay_table(replay), flush=True)
        if ready is not None:
            ready(replay)
        with _interrupt_sets(stop):
            while not stop.wait(0.5):
                pass
    return EXIT_OK


@contextlib.contextmanager
def _interrupt_sets(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C (and SIGTERM) end the replay cleanly, from the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def format_replay_table(replay: RunningReplay) -> str:
    """The human table: one row per endpoint, with the names a client can use there."""
    rows = [
        ("ADDRESS", "PROTOCOL", "TLS", "RECORDED", "CERTIFICATES (the client's SNI selects one)")
    ]
    for listener in replay.listeners:
        e = listener.endpoint
        default = _leaf_names(e.default.leaf) + (" (assumed)" if e.default_assumed else "")
        names = f"default: {default}"
        if e.by_sni:
            names += f"; by SNI: {', '.join(printable(n) for n in sorted(e.by_sni))}"
        host = f"[{listener.host}]" if ":" in listener.host else listener.host
        rows.append(
            (
                f"{host}:{listener.port}",
                printable(e.protocol),
                printable(e.tls_kind),
                printable(e.recorded_address),
                names,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    lines.append("")
    lines.append(f"Trust this CA file in the client under test: {replay.ca_file}")
    first = replay.listeners[0]
    name = printable(next(iter(first.names()), "NAME"))
    lines.append(
        f"Point the client's server name at the address, e.g. curl --cacert {replay.ca_file} "
        f"--connect-to {name}:{first.port}:{first.host}:{first.port} ...; "
        f"openssl s_client -connect {first.host}:{first.port} -servername {name}"
    )
    for skipped in replay.plan.skipped:
        lines.append(
            f"not replayed: session {printable(skipped.id)}: {shown_prose(skipped.reason)}"
        )
    lines.append("Ctrl-C to stop.")
    return "\n".join(lines)


def _leaf_names(cert: Any) -> str:
    try:
        presented = PresentedIdentifiers.from_certificate(cert)
    except ValueError:
        return "(unreadable names)"
    names = [*presented.dns_names, *presented.ip_addresses] or [
        f"CN={c}" for c in presented.common_names
    ]
    text = ", ".join(printable(n) for n in names) or "(no names)"
    return text if len(text) <= 60 else text[:57] + "..."
