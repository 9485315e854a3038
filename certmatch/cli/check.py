"""``certmatch check``: judge the sessions in recordings, one line each, and a summary."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import operator
import os
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO

from certmatch.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    UsageError,
    add_recording_paths,
    add_trust_options,
    load_trust,
    recording_paths,
)
from certmatch.core import causes as catalogue
from certmatch.core import report
from certmatch.core.anchors import RecordingAnchors, TrustAnchor
from certmatch.core.diagnosis import Diagnosis, Finding
from certmatch.core.facts import SessionFacts
from certmatch.core.findings import Decision, explain
from certmatch.core.judge import Judge, Judgement, hashable
from certmatch.core.recording import LineProblem, RecordingError, iter_with_header
from certmatch.core.report import shown_prose
from certmatch.core.trust import TrustStore


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "check",
        help="judge the sessions in recordings",
        description="Print one line per recorded session (requested host, presented names, "
        "verdict, primary cause) and a summary. Exit 0 when nothing fails, 1 when sessions fail, "
        "2 on usage or input errors (including recordings whose every record was cut short). "
        "A directory's *.jsonl files are read, not its subdirectories' (a note names them).",
    )
    add_recording_paths(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    parser.add_argument(
        "--fail-on",
        metavar="CAUSES",
        default=None,
        help="comma-separated cause ids that make the exit status 1, or 'any' for any cause at "
        "all (warnings included); default: any failing session",
    )
    parser.add_argument(
        "-v",
        "--explain",
        action="store_true",
        help="print the explanation, fix and citations under each failing session",
    )
    add_trust_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fail_on = _fail_on(args.fail_on)
    trust = load_trust(args)
    paths, notes = recording_paths(args.paths, "check")
    if not paths:
        raise UsageError(f"no recordings (*.jsonl) found in {', '.join(args.paths)}")
    for note in notes:
        print(f"certmatch: note: {shown_prose(note)}", file=sys.stderr)
    return check(
        paths,
        trust,
        json_output=args.json,
        explain=args.explain,
        fail_on=fail_on,
        colour=not args.json and stdout_wants_colour(),
    )


def stdout_wants_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def check(
    paths: Sequence[Path],
    trust: TrustStore | RecordingAnchors,
    *,
    json_output: bool = False,
    explain: bool = False,
    fail_on: set[str] | None = None,
    colour: bool = False,
) -> int:
    """Judge every session in ``paths`` and print the report; the command's exit status.

    ``trust``: a store, to which each recording's header CAs are added for its own
    sessions, or the :class:`RecordingAnchors` that say whether to. ``fail_on``: the cause
    ids that make a session count as failing (``{"any"}``: any cause), or None for the
    verdict's own judgement. Unreadable lines go to stderr; a record cut short by a stopped
    writer (at the end of a file or before a restarted writer's lines) is a warning, any
    other bad line makes the status 2, and so does a file that is not a recording, after
    every other file is judged. When every record read was cut short, no session was read:
    an error (status 2), never a silent pass. One judge per set of recorded CAs serves every session, so
    a situation seen again is decided once; ``--json`` is written one session at a time.
    """
    anchors = trust if isinstance(trust, RecordingAnchors) else RecordingAnchors(trust)
    out = _Output(sys.stdout)
    err = _Output(sys.stderr, gathered=1)
    try:
        return _check(paths, anchors, out, err, json_output, explain, fail_on, colour)
    finally:
        out.flush()  # what is gathered so far, even when stopped by an exception


def _check(
    paths: Sequence[Path],
    anchors: RecordingAnchors,
    out: _Output,
    err: _Output,
    json_output: bool,
    explain: bool,
    fail_on: set[str] | None,
    colour: bool,
) -> int:
    judges: dict[int, Judge] = {}
    sessions = _JsonSessions(out) if json_output else None
    lines = None if sessions is not None else _SessionLines(out, colour)
    # How many sessions had each (verdict, cause ids, failed, trusted through a recorded CA),
    # in the order first seen: the summary is counted from these at the end.
    tally: dict[tuple[str, tuple[str, ...], bool, bool], int] = {}
    input_errors = 0
    cut: list[LineProblem] = []  # records cut short by a stopped writer (warnings)
    problems = _Problems()
    for path in paths:
        try:
            header, items = iter_with_header(path)
        except RecordingError as error:  # one file is not a recording: say so, judge the rest
            input_errors += 1
            problems.add(str(error))
            out.flush()
            err.line(f"certmatch: error: {error}")
            continue
        name = str(path)
        store, recorded = anchors.store_for(header.ca_certificates)
        unreadable = recorded.problem(name)
        if unreadable is not None:  # judged without them: the safe direction, so a warning
            problems.add(unreadable)
            out.flush()
            err.line(f"certmatch: warning: {unreadable}")
        judge = judges.get(id(store))
        if judge is None:
            judge = judges[id(store)] = Judge(store)
        for item in items:
            if type(item) is not SessionFacts:
                assert isinstance(item, LineProblem)
                partial = item.expected  # a stopped writer's cut record: expected, not an error
                if partial:
                    cut.append(item)
                else:
                    input_errors += 1
                problems.add(str(item))
                out.flush()  # stdout's lines so far first, so the two streams keep their order
                err.line(f"certmatch: {'warning' if partial else 'error'}: {item}")
                continue
            if lines is not None:
                counted, anchor = lines.add(item, judge)
            else:
                assert sessions is not None
                verdict, causes, failed, anchor = sessions.add(item, name, judge)
                from_header = anchor is not None and anchor.from_header
                counted = (verdict, causes, failed, from_header)
            tally[counted] = tally.get(counted, 0) + 1
            # A passing session has nothing to explain, unless it has an anchor or DNS facts
            # (report.explain shows the three names then).
            if explain and lines is not None:
                _verdict, causes, failed, _from_header = counted
                if _is_failure(failed, causes, fail_on) or causes or anchor or item.dns:
                    out.line(report.explain(judge.diagnose(item)))

    verdicts: Counter[str] = Counter()
    primaries: Counter[str] = Counter()
    failures = from_headers = 0
    for (verdict, causes, failed, from_header), count in tally.items():
        verdicts[verdict] += count
        if causes:
            primaries[causes[0]] += count
        failures += count * _is_failure(failed, causes, fail_on)
        from_headers += count * from_header
    total = sum(verdicts.values())
    if not total and cut:
        # Warnings only, and nothing else: no session was read, so nothing passed either.
        input_errors += 1
        nothing = _nothing_read(cut)
        problems.add(nothing)
        out.flush()
        err.line(f"certmatch: error: {nothing}")
    if sessions is not None:
        summary = {
            "sessions": total,
            "failed": failures,
            "verdicts": dict(verdicts),
            "primary_causes": dict(primaries),
            "trusted_through_recorded_ca": from_headers,
        }
        sessions.close(summary, problems.listed())
    elif total or not input_errors:  # after input errors alone, their lines say it all
        out.line(report.summary(total, failures, verdicts, primaries))
        if from_headers:
            out.line(report.recorded_anchors_note(from_headers))
    if input_errors:
        return EXIT_USAGE
    return EXIT_FAILED if failures else EXIT_OK


def _nothing_read(cut: list[LineProblem]) -> str:
    """Why there is no verdict when every record read was cut short."""
    files = list(dict.fromkeys(problem.path for problem in cut))
    if len(cut) == 1:
        what = f"the only record, in {files[0]}, was cut short"
    elif len(files) == 1:
        what = f"all {len(cut)} records in {files[0]} were cut short"
    else:
        what = f"all {len(cut)} records, in {len(files)} files, were cut short"
    return (
        f"no session was read: {what} (its writer was stopped while writing, or the disk was "
        "full), so nothing was judged; record the sessions again"
    )


class _SessionLines:
    """``check``'s one line per session. Everything after the time is the same for the
    sessions of one judgement with the same protocol, host, host source and SNI, so it is
    written once (:func:`report.session_line_rest`) and kept for the next ones."""

    def __init__(self, out: _Output, colour: bool) -> None:
        self.out = out
        self.colour = colour
        self.rests: dict[Hashable, tuple[Judgement, str, tuple[str, tuple[str, ...], bool, bool]]]
        self.rests = {}

    def add(
        self, facts: SessionFacts, judge: Judge
    ) -> tuple[tuple[str, tuple[str, ...], bool, bool], TrustAnchor | None]:
        """Write the session's line; what the summary counts of it, and its anchor."""
        j = judge.judgement(facts)
        # id(j) stands for j, which the entry holds, so the id cannot be reused while kept.
        key = (id(j), facts.protocol, facts.requested_host, facts.requested_host_source, facts.sni)
        known = self.rests.get(key)
        if known is None or known[0] is not j:
            rest = report.session_line_rest(_for_one_line(facts, j), colour=self.colour)
            from_header = j.anchor is not None and j.anchor.from_header
            known = (j, rest, (j.verdict, j.causes, j.failed, from_header))
            _put(self.rests, key, known, _TEMPLATES)
        self.out.line(f"{report.session_time(facts)}  {known[1]}")
        return known[2], j.anchor


def _for_one_line(facts: SessionFacts, judgement: Judgement) -> Diagnosis:
    """A diagnosis for :func:`report.session_line`, which reads the verdict, the names and the
    primary cause's id: its findings are the causes without their prose (writing every
    session's prose is most of the cost of a full diagnosis, and one line shows none)."""
    return _OneLine(
        facts,
        judgement.verdict,
        _unexplained(judgement.causes),
        None,
        None,
        judgement.certificates,
        judgement.anchor,
        judgement.presented_names,
    )


@dataclass(frozen=True)
class _OneLine(Diagnosis):
    """A diagnosis without prose whose names come from the judgement, worked out once."""

    names: tuple[str, ...] = ()

    @property
    def presented_names(self) -> tuple[str, ...]:
        return self.names


@functools.lru_cache(maxsize=1024)
def _unexplained(cause_ids: tuple[str, ...]) -> tuple[Finding, ...]:
    return tuple(Finding(catalogue.get(cid), "", "") for cid in cause_ids)


class _Output:
    """Lines to a text stream that never fail on text it cannot encode (a lone surrogate
    from a recording becomes a visible ``\\udXXX`` escape instead of a traceback).

    Text is gathered and written a few hundred pieces at a time (one write call per
    session costs more than the line itself); :meth:`flush` writes what is gathered, as
    must be done before anything else writes to the same terminal."""

    def __init__(self, stream: TextIO, *, gathered: int = 256) -> None:
        self.write = stream.write
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.pieces: list[str] = []
        self.gathered = gathered  # 1: every piece is written at once

    def line(self, text: str) -> None:
        self.pieces.append(text + "\n")
        if len(self.pieces) >= self.gathered:
            self.flush()

    def text(self, text: str) -> None:
        self.pieces.append(text)
        if len(self.pieces) >= self.gathered:
            self.flush()

    def flush(self) -> None:
        if not self.pieces:
            return
        text = "".join(self.pieces)
        self.pieces.clear()
        try:
            self.write(text)
        except UnicodeEncodeError:
            self._escaped(text)

    def _escaped(self, text: str) -> None:
        # The stream encodes a whole string or none of it, so nothing was written yet.
        self.write(text.encode(self.encoding, "backslashreplace").decode(self.encoding))


class _JsonSessions:
    """``check --json``'s document, written as it goes: ``{"sessions": [...], "summary": {...},
    "problems": [...]}`` with one session per line, so memory stays flat however many there
    are. Every string is ASCII with ``\\u`` escapes, so control characters, bidi overrides
    and lone surrogates reach no terminal raw and the document stays valid JSON.

    Sessions that differ only in their id, start time and client address (the same client
    and server, again) share one decision and the same explanation, so the entry is
    written once with placeholders for those three and filled in for each (see
    :class:`_EntryTemplate`).
    """

    def __init__(self, out: _Output) -> None:
        self.out = out
        self.separator = "\n"
        self.templates: dict[Hashable, _EntryTemplate | None] = {}
        # Kept apart, so one-off situations (a time named in the causes) never push out
        # the templates that are used again and again.
        self.first_seen: dict[Hashable, _FirstSeen] = {}
        out.text('{\n  "sessions": [')

    def add(
        self, facts: SessionFacts, recording: str, judge: Judge
    ) -> tuple[str, tuple[str, ...], bool, TrustAnchor | None]:
        """Write the session's entry; its verdict, cause ids, whether it failed, and the
        anchor its chain was trusted through."""
        decision = judge.decision(facts)
        rest = [v if type(v) is str or v is None else hashable(v) for v in _rest_of(facts)]
        key = (
            id(decision),
            recording,
            facts.client_address is None,
            facts.client_waited is None,  # a wait may be told in the prose, never a missing one
            *rest,
        )
        known = self.templates.get(key, _MISSING)
        if known is _MISSING or (known is not None and known.decision is not decision):
            first = self.first_seen.pop(key, None)
            if first is not None and first.decision is decision:
                # Seen twice: worth a template, checked against the first one's full entry.
                known = _EntryTemplate.make(first, judge, recording)
                _put(self.templates, key, known, _TEMPLATES)
        if known is not None and known is not _MISSING and known.decision is decision:
            text = known.fill(facts)
            verdict, causes, failed = known.verdict, known.causes, known.failed
        else:  # explained in full: the first of its kind, or one no template reproduces
            d = judge.diagnose(facts)
            text = _encode_entry(d, recording)
            verdict, causes, failed = d.verdict, d.cause_ids, d.failed
            if known is _MISSING:
                _put(self.first_seen, key, _FirstSeen(decision, facts, text), _FIRST_SEEN)
        self.out.text(self.separator + "    " + text)
        self.separator = ",\n"
        return verdict, causes, failed, decision.anchor

    def close(self, summary: dict[str, Any], problems: list[str]) -> None:
        self.out.text(
            "\n  ],\n"
            f'  "summary": {json.dumps(summary, indent=2, ensure_ascii=True)},\n'
            f'  "problems": {json.dumps(problems, indent=2, ensure_ascii=True)}\n'
            "}\n"
        )


_MISSING: Any = object()
_TEMPLATES = 4096
_FIRST_SEEN = 1024


def _put[K, V](cache: dict[K, V], key: K, value: V, limit: int) -> None:
    if len(cache) >= limit:
        del cache[next(iter(cache))]  # the oldest
    cache[key] = value


# The facts that differ from one connection to the next and that a diagnosis only copies.
_PER_CONNECTION = ("id", "started", "client_address", "client_waited")
_rest_of = operator.attrgetter(
    *(f.name for f in dataclasses.fields(SessionFacts) if f.name not in _PER_CONNECTION)
)
_encode = json.JSONEncoder(ensure_ascii=True).encode


def _encode_entry(d: Diagnosis, recording: str) -> str:
    entry = d.to_json()
    entry["recording"] = recording
    return _encode(entry)


@dataclass(frozen=True)
class _FirstSeen:
    """The first session of its kind, and its full ``--json`` entry."""

    decision: Decision
    facts: SessionFacts
    text: str


@dataclass(frozen=True)
class _EntryTemplate:
    """A session's ``--json`` entry with placeholders for the per-connection facts.

    Made when a second session of a kind comes, and kept only if filling it in gives
    exactly the full entry of the first, each placeholder appearing once, so the
    explanation does not quote those facts.
    """

    decision: Decision
    pieces: tuple[str, ...]  # the text around the placeholders
    names: tuple[str, ...]  # the fact that goes between pieces[i] and pieces[i + 1]
    verdict: str
    causes: tuple[str, ...]
    failed: bool

    _PLACEHOLDERS: ClassVar[dict[str, str]] = {
        "id": "\x00certmatch:id\x00",
        "started": "\x00certmatch:started\x00",
        "client_address": "\x00certmatch:client_address\x00",
        "client_waited": "\x00certmatch:client_waited\x00",
        # DNS facts differ per session in their TTLs and look-up times, which the key
        # leaves out (hashable() keys them on what the rules read), so they are filled in.
        "dns": "\x00certmatch:dns\x00",
    }

    @classmethod
    def make(cls, first: _FirstSeen, judge: Judge, recording: str) -> _EntryTemplate | None:
        """The template for sessions like ``first``, or None when it does not reproduce
        ``first``'s full entry exactly."""
        stand_in = dataclasses.replace(first.facts)
        placeholders = dict(cls._PLACEHOLDERS)
        if first.facts.dns is None:
            del placeholders["dns"]  # "dns": null, as every session of this key has it
        for name, placeholder in placeholders.items():
            setattr(stand_in, name, _DnsStandIn(placeholder) if name == "dns" else placeholder)
        try:
            d = explain(stand_in, first.decision, judge)
        except Exception:  # noqa: BLE001 - the full diagnosis handles it
            return None
        text = _encode_entry(d, recording)
        encoded = {_encode(p): name for name, p in placeholders.items()}
        if any(text.count(p) != 1 for p in encoded):
            return None
        pieces, names = [], []
        for placeholder, name in sorted(encoded.items(), key=lambda item: text.index(item[0])):
            before, text = text.split(placeholder)
            pieces.append(before)
            names.append(name)
        pieces.append(text)
        template = cls(
            first.decision, tuple(pieces), tuple(names), d.verdict, d.cause_ids, d.failed
        )
        return template if template.fill(first.facts) == first.text else None

    def fill(self, facts: SessionFacts) -> str:
        pieces = self.pieces
        out = [pieces[0]]
        for name, piece in zip(self.names, pieces[1:], strict=True):
            value = getattr(facts, name)
            out.append(_encode(value.to_json() if name == "dns" else value))
            out.append(piece)
        return "".join(out)


@dataclass(frozen=True)
class _DnsStandIn:
    """Stands in for a session's DNS facts while a template is made: written as its
    placeholder (anything else read from it fails, and no template is made)."""

    placeholder: str

    def to_json(self) -> str:
        return self.placeholder


class _Problems:
    """The problems for ``--json``: the first thousands in full, then only how many more."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.more = 0

    def add(self, problem: str) -> None:
        if len(self.kept) < self.LIMIT:
            self.kept.append(problem)
        else:
            self.more += 1

    def listed(self) -> list[str]:
        if not self.more:
            return self.kept
        return [*self.kept, f"... and {self.more:,} more problems (see stderr)"]


def _fail_on(spec: str | None) -> set[str] | None:
    if spec is None:
        return None
    if spec.strip() == "any":
        return {"any"}
    ids = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = sorted(ids - set(catalogue.CAUSES))
    if unknown:
        raise UsageError(
            f"--fail-on: unknown cause id(s) {', '.join(unknown)}. "
            f"Known ids: {', '.join(catalogue.CAUSES)}."
        )
    return ids


def _is_failure(failed: bool, causes: tuple[str, ...], fail_on: set[str] | None) -> bool:
    """``failed``: the verdict's own judgement of a session with these causes."""
    if fail_on is None:
        return failed
    if "any" in fail_on:
        return failed or bool(causes)
    return bool(fail_on.intersection(causes))
