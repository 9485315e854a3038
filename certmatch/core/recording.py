"""Reading and writing recordings: JSON Lines files of TLS handshake facts.

Line 1 is a header naming the format and its version; every further line is
one session (``SessionFacts.to_json()``). The published JSON Schema for a
line is ``certmatch/core/recording.schema.json``; every line read is checked
against it. Unknown extra properties are allowed so a newer 1.x writer does
not break an older reader.

Reading is forgiving about lines and strict about files: a bad line becomes
a ``LineProblem`` and reading goes on, but a file that is not a recording
at all raises ``RecordingError``. A line longer than ``LINE_LIMIT`` (1 MB) is a
problem read in pieces, never whole, and so is a string field longer than
``FIELD_LIMIT`` (64 KiB; certificates are bounded by the line limit only). A record
cut short by a stopped writer is marked: ``truncated`` at the end of the file,
``cut_short`` in mid-file (a writer started again after it); both are expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from certmatch.core.facts import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RecordingHeader,
    SessionFacts,
    SniProbe,
    StartTlsFacts,
)
from certmatch.core.line_schema import plain_dns_facts, show_value, validate_line

READABLE_VERSIONS: tuple[int, ...] = (FORMAT_VERSION,)

# The header is short; never read further than this looking for its end, so
# a large binary file passed by mistake is rejected without loading it.
_HEADER_READ_LIMIT = 64 * 1024

# The longest line read, in bytes: a session with a long chain is a few tens of KiB, so a
# longer line is skipped as one problem, and never read whole into memory.
LINE_LIMIT = 1024 * 1024
# The longest string field, in characters, except the certificates (which the line limit
# bounds). A TLS extension carries at most 65,535 bytes, so a real SNI always fits.
FIELD_LIMIT = 64 * 1024
_SKIP_PIECE = 64 * 1024  # how much of an overlong line is held at a time while skipping it
_READ_BUFFER = 256 * 1024


class RecordingError(Exception):
    """A file cannot be used as a recording at all. ``str()`` is one line:
    ``path:line: what is wrong; what to do`` (``path: ...`` when no line applies)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class LineProblem:
    """One line that was skipped while reading; ``str()`` is ``path:line: message``."""

    path: str
    line: int
    message: str
    truncated: bool = False  # the unterminated last line a stopped writer leaves behind
    # a record cut short mid-file: a stopped writer's last line, then a new writer's records
    cut_short: bool = False

    @property
    def expected(self) -> bool:
        """A stopped writer's cut record (at the end or mid-file): a warning, not an error."""
        return self.truncated or self.cut_short

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Recording:
    """A whole recording read into memory."""

    path: str
    header: RecordingHeader
    sessions: list[SessionFacts]
    problems: list[LineProblem]  # bad lines that were skipped; good records are never dropped

    @property
    def partial_last_line(self) -> bool:
        """True if the only problem is an unfinished last line (the writer was stopped)."""
        return len(self.problems) == 1 and self.problems[0].truncated


# --- the schema, and a fast check compiled from it -------------------------------------------

_NESTED_FIELDS = {
    "sni_probe": frozenset(f.name for f in dataclasses.fields(SniProbe)),
    "starttls": frozenset(f.name for f in dataclasses.fields(StartTlsFacts)),
}


def _session_from_line(data: dict[str, Any]) -> SessionFacts:
    # Drop unknown keys inside nested objects too (a newer 1.x writer may add them);
    # SessionFacts.from_json only drops them at the top level.
    if data.get("sni_probe") is not None or data.get("starttls") is not None:
        for key, known in _NESTED_FIELDS.items():
            nested = data.get(key)
            if nested is not None and not nested.keys() <= known:
                data[key] = {k: v for k, v in nested.items() if k in known}
    return SessionFacts.from_line(data)


def _what_it_looks_like(first: bytes) -> str:
    """A short guess at what a non-recording file is, from its first line."""
    if first.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file; decompress it first"
    if first.lstrip().startswith(b"-----BEGIN "):
        label = first.lstrip()[11:].split(b"-----")[0].decode("ascii", "replace")
        return f"a PEM file ({label}), not a recording"
    if re.match(rb"\d+:", first):
        return "a mitmproxy flow file (mitmdump -w), not a recording"
    if first.startswith(b"\x30\x82"):
        return "a binary DER file (a certificate or key?), not a recording"
    if b"\x00" in first:
        return "a binary file, not a recording"
    try:
        data = json.loads(first)
    except (ValueError, RecursionError):
        return "a file whose first line is not JSON, not a recording"
    if isinstance(data, dict) and data.get("type") == "session":
        return "a recording without its header line (was the start of the file cut off?)"
    if isinstance(data, dict) and "log" in data:
        return "a HAR file, not a certmatch recording"
    return "JSON, but its first line is not a certmatch recording header"


class _NotARecording(Exception):
    """Why a file cannot be read as a recording, and what a reader should do about it."""

    def __init__(
        self,
        message: str,
        line: int | None = None,
        advice: str = "pass a .jsonl recording written by certmatch",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.advice = advice


def _read_header(path: Path) -> tuple[RecordingHeader, int, LineProblem | None]:
    """The header, the byte offset where sessions start, and a problem with the header line."""
    try:
        with path.open("rb") as file:
            first = file.readline(_HEADER_READ_LIMIT)
    except FileNotFoundError:
        raise _NotARecording("no such file", advice="check the path") from None
    except IsADirectoryError:
        raise _NotARecording("is a directory, not a recording file") from None
    except OSError as error:
        raise _NotARecording(f"cannot read it ({error.strerror or error})") from None
    if not first:
        raise _NotARecording("the file is empty (a recording starts with a header line)")
    if not first.strip():
        raise _NotARecording("the first line is blank (a recording starts with a header line)", 1)
    try:
        data = json.loads(first)
    except (ValueError, RecursionError):
        data = None
    if (
        not isinstance(data, dict)
        or data.get("type") != "header"
        or data.get("format") != FORMAT_NAME
    ):
        raise _NotARecording(f"this looks like {_what_it_looks_like(first)}", 1)
    version = data.get("format_version")
    if type(version) is not int:
        raise _NotARecording(
            f"the header has no usable format_version (got {show_value(version)})",
            1,
            "the file was damaged or written by another tool",
        )
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        newer = version > max(READABLE_VERSIONS)
        raise _NotARecording(
            f"recording format version {version} is "
            + ("newer than this certmatch understands" if newer else "not a valid version")
            + f" (this certmatch reads version {readable})",
            1,
            "upgrade certmatch to read it" if newer else "the header is damaged",
        )
    recorded = data.get("ca_certificates")
    header = RecordingHeader(
        tool_version=_text_or_unknown(data.get("tool_version")),
        created=_text_or_unknown(data.get("created")),
        format=FORMAT_NAME,
        format_version=version,
        # A damaged list is reported with the header line and trusted for nothing.
        ca_certificates=(
            list(recorded)
            if type(recorded) is list and all(type(pem) is str for pem in recorded)
            else []
        ),
    )
    problem = validate_line(data)
    header_problem = None
    if problem is not None:
        header_problem = LineProblem(str(path), 1, f"the header line is damaged: {problem}")
    return header, len(first), header_problem


def _text_or_unknown(value: Any) -> str:
    return value if isinstance(value, str) else "unknown"


def open_recording(path: str | Path) -> tuple[Path, RecordingHeader, int, LineProblem | None]:
    """Check a recording's header: its path, header, the byte offset of the first
    session line, and a problem with the header line if it is damaged but readable.

    Raises RecordingError as ``read_recording`` does. Used by readers that tail
    a growing file (the TUI's follow mode).
    """
    path = Path(path)
    try:
        header, offset, problem = _read_header(path)
    except _NotARecording as error:
        raise RecordingError(path, f"{error.message}; {error.advice}", error.line) from None
    return path, header, offset, problem


def parse_line(path: str, number: int, raw: bytes, last: bool) -> SessionFacts | LineProblem | None:
    """One line after the header: a session, a problem, or None for a line that carries nothing.

    A record cut short (a writer stopped mid-line) is a problem marked ``truncated``: at
    the end of the file, or before a later writer's records when a proxy was restarted.
    """
    if len(raw) > LINE_LIMIT and len(raw.rstrip(b"\r\n")) > LINE_LIMIT:
        return _too_long(path, number)
    # orjson parses a line several times faster than json. It refuses what json would read
    # differently (NaN, lone surrogates, bytes that are not UTF-8) and reads an integer
    # beyond 64 bits as a float, which the schema then refuses where an integer goes; so
    # anything it refuses, any line that comes out a problem, and any session with such a
    # float where a number goes, is read again by json, which decides and words the problem
    # exactly as it always did.
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        found = _session_from_data(path, number, raw, data)
        if found is None or (type(found) is SessionFacts and not _maybe_big_integer(found)):
            return found
    try:
        # Decoded as json.loads(bytes) would, without its guess at the encoding: always UTF-8.
        data = json.loads(raw.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as error:
        return _not_json(path, number, raw, last, error)
    return _session_from_data(path, number, raw, data)


def _maybe_big_integer(facts: SessionFacts) -> bool:
    """A number field holds a float as large as orjson makes of an integer beyond 64 bits."""
    waited, dns = facts.client_waited, facts.dns
    if type(waited) is float and abs(waited) >= _INT64_FLOAT:
        return True
    return dns is not None and type(dns.elapsed) is float and abs(dns.elapsed) >= _INT64_FLOAT


_INT64_FLOAT = 2.0**63


def _session_from_data(
    path: str, number: int, raw: bytes, data: Any
) -> SessionFacts | LineProblem | None:
    """A parsed line checked against the schema and built into a session."""
    # DNS facts are checked and built in one pass, and the rest of the line checked
    # without them (what is not surely valid goes whole to the full check, as it was).
    dns = None
    if type(data) is dict and data.get("dns") is not None and len(raw) <= FIELD_LIMIT:
        dns = plain_dns_facts(data["dns"])
        if dns is not None:
            data["dns"] = None
    problem = validate_line(data)
    if problem is not None:
        return LineProblem(
            path, number, f"does not match the recording schema: {problem}; line skipped"
        )
    if len(raw) > FIELD_LIMIT:  # a shorter line cannot hold a longer field
        field = _overlong_field(data)
        if field is not None:
            return LineProblem(
                path,
                number,
                f"{field} is longer than {FIELD_LIMIT:,} characters, the limit for a field "
                "other than a certificate; line skipped",
            )
    if data["type"] == "header":
        return None  # a valid second header: recordings joined with cat
    try:
        facts = _session_from_line(data)
    except (TypeError, ValueError) as error:  # defensive: the schema should rule these out
        return LineProblem(path, number, f"cannot build a session from it ({error}); line skipped")
    if dns is not None:
        facts.dns = dns
    return facts


def _not_json(
    path: str, number: int, raw: bytes, last: bool, error: ValueError | RecursionError
) -> LineProblem | None:
    if not raw.strip():
        return None
    text = raw.rstrip(b"\r\n")
    if last and not raw.endswith(b"\n"):
        return LineProblem(
            path,
            number,
            "the last line stops in the middle of a record (no newline at its end): the "
            "writer was probably stopped while writing it; every complete record was read",
            truncated=True,
        )
    why = getattr(error, "msg", None) or str(error)
    if text.startswith(b"{") and isinstance(error, json.JSONDecodeError) and _cut_short(error):
        return LineProblem(
            path,
            number,
            "the line stops mid-record: a writer was probably stopped while writing it, and "
            f"a later one went on after it ({why}); line skipped, every complete record was "
            "read",
            cut_short=True,
        )
    return LineProblem(path, number, f"not valid JSON: {why}; line skipped")


def _cut_short(error: json.JSONDecodeError) -> bool:
    """The text ends where JSON was still expected: a record cut, not a malformed one."""
    if error.msg.startswith("Unterminated string"):
        return True
    rest = error.doc[error.pos :].strip()
    if error.msg.startswith("Invalid \\uXXXX escape"):
        return len(rest) < 6  # cut inside the escape
    return any(word.startswith(rest) for word in ("true", "false", "null"))  # "" included


def _too_long(path: str, number: int) -> LineProblem:
    return LineProblem(
        path,
        number,
        f"the line is longer than {LINE_LIMIT // (1024 * 1024)} MB ({LINE_LIMIT:,} bytes), "
        "far more than any record certmatch writes; line skipped unread",
    )


def _overlong_field(data: Any, where: str = "") -> str | None:
    """The first string field (certificates aside) longer than FIELD_LIMIT, as a path."""
    if type(data) is str:
        return where if len(data) > FIELD_LIMIT else None
    if type(data) is list:
        items: Any = enumerate(data)
    elif type(data) is dict:
        items = ((k, v) for k, v in data.items() if k != "chain")
    else:
        return None
    for key, value in items:
        found = _overlong_field(value, f"{where}[{key}]" if type(key) is int else f"{where}.{key}")
        if found is not None:
            return found.lstrip(".")
    return None


def _iter_body(
    path: Path, offset: int, header_problem: LineProblem | None
) -> Iterator[SessionFacts | LineProblem]:
    """The items after the header. A line longer than LINE_LIMIT is one problem: it is read
    and dropped piece by piece, never held whole."""
    if header_problem is not None:
        yield header_problem
    name = str(path)
    # A larger buffer: one read per few dozen lines, not one per two (lines are a few KiB).
    with path.open("rb", buffering=_READ_BUFFER) as file:
        file.seek(offset)
        readline = file.readline
        limit = LINE_LIMIT + 2
        number = 1  # the header's
        previous: bytes | LineProblem | None = None
        # One line of look-ahead, so the last line is known to be the last.
        while raw := readline(limit):
            if previous is not None:
                item = (
                    previous
                    if isinstance(previous, LineProblem)
                    else parse_line(name, number, previous, False)
                )
                if item is not None:
                    yield item
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                del raw
                while (rest := readline(_SKIP_PIECE)) and not rest.endswith(b"\n"):
                    pass
                previous = _too_long(name, number)
            else:
                previous = raw
        if isinstance(previous, LineProblem):
            yield previous
        elif previous is not None:
            item = parse_line(name, number, previous, True)
            if item is not None:
                yield item


def iter_recording(path: str | Path) -> Iterator[SessionFacts | LineProblem]:
    """Sessions and skipped-line problems of a recording, in file order, one at a time.

    The header is checked at once: RecordingError if the file is missing, empty,
    not a recording, or of a format version this certmatch cannot read.
    """
    path, _header, offset, problem = open_recording(path)
    return _iter_body(path, offset, problem)


def iter_with_header(
    path: str | Path,
) -> tuple[RecordingHeader, Iterator[SessionFacts | LineProblem]]:
    """The header, and :func:`iter_recording`'s items: for a reader that needs the header's
    CA certificates before it judges the sessions."""
    path, header, offset, problem = open_recording(path)
    return header, _iter_body(path, offset, problem)


def read_recording(path: str | Path) -> Recording:
    """Read a whole recording; bad lines are collected as problems, never fatal."""
    path, header, offset, problem = open_recording(path)
    sessions: list[SessionFacts] = []
    problems: list[LineProblem] = []
    try:
        for item in _iter_body(path, offset, problem):
            if isinstance(item, SessionFacts):
                sessions.append(item)
            else:
                problems.append(item)
    except OSError as error:
        raise RecordingError(path, f"reading stopped: {error.strerror or error}") from None
    return Recording(path=str(path), header=header, sessions=sessions, problems=problems)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, directories replaced by their ``*.jsonl`` files in name order.

    A path that does not exist, or a directory with no recordings, raises RecordingError.
    A file named twice is listed once.
    """
    result: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.jsonl") if p.is_file())
            if not found:
                raise RecordingError(
                    path,
                    "directory holds no *.jsonl recordings; pass a recording file or "
                    "the directory the proxy records into",
                )
        elif path.exists():
            found = [path]
        else:
            raise RecordingError(path, "no such file or directory; check the path")
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                result.append(file)
    return result


# --- writing ---------------------------------------------------------------------------------


class RecordingWriter:
    """Append-only writer: one line per session, each written with a single ``os.write``.

    The file is opened ``O_APPEND`` and each complete line goes out in one write
    call, which the kernel appends as a unit for a regular file: writers in several
    threads or processes never interleave within a line, and no lock is needed.
    Nothing is buffered: a line is in the file when :meth:`write` returns.
    Call :meth:`close` once no thread writes any more.

    A new file is created owner-only (0600, whatever the umask): it holds who connected
    where. An existing file keeps its mode; it is someone's choice.

    A write that fails part-way (ENOSPC, EIO) leaves half a line; the next record then
    starts on a fresh line, so the cut record stays one bad line and the next one is whole.
    """

    def __init__(
        self, path: str | Path, *, tool_version: str, ca_certificates: Sequence[str] = ()
    ) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        # True after a failed write, which may have left the file ending inside a line.
        self._ends_mid_line = False
        anchors = _certificate_list(self.path, ca_certificates)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            starting = b""
            if self.path.exists() and self.path.stat().st_size > 0:
                # A stopped writer may have left half a line: repair it now (the empty
                # write below adds the newline), so it stays one bad line.
                self._ends_mid_line = self._ends_inside_a_line(anchors)
            else:
                header = RecordingHeader(
                    tool_version=tool_version,
                    created=datetime.now(UTC).isoformat(timespec="seconds"),
                    ca_certificates=anchors,
                )
                starting = _encode_line(header.to_json())
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            if starting or self._ends_mid_line:
                self._write(starting)
        except OSError as error:
            self.close()
            raise RecordingError(
                self.path,
                f"cannot write the recording ({error.strerror or error}); "
                "choose a writable location",
            ) from None

    def _ends_inside_a_line(self, anchors: list[str]) -> bool:
        """Refuse someone else's file, or a recording judged with other CAs; say whether
        it ends inside a line (a cut record)."""
        try:
            header, _offset, _problem = _read_header(self.path)
        except _NotARecording as error:
            raise RecordingError(
                self.path,
                f"will not append to this file: {error.message}; choose another output file",
                error.line,
            ) from None
        recorded = {_pem_key(pem) for pem in header.ca_certificates}
        if recorded != {_pem_key(pem) for pem in anchors}:
            # Its header's CAs judge every session in it, so a session judged with others
            # would be read back with a verdict it was never given live.
            raise RecordingError(
                self.path,
                "will not append to this recording: its header trusts "
                f"{_count(len(recorded), 'extra CA certificate')} and this run "
                f"{_count(len(anchors), 'other')}, and a recording's sessions are all "
                "judged with its header's CAs; write to a new file, or pass the same CA "
                "files as the run that started it",
                1,
            )
        with self.path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"

    def _write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            raise ValueError(f"recording writer for {self.path} is closed")
        if self._ends_mid_line:
            data = b"\n" + data
        try:
            # A regular file takes the whole line at once; a short write means the disk
            # is full, and the rest either goes out now or raises OSError (ENOSPC) here.
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            # Part of the line may be in the file, and an error does not say how much:
            # start the next record with a newline. At worst that is a blank line.
            self._ends_mid_line = True
            raise
        self._ends_mid_line = False

    def write(self, session: SessionFacts) -> None:
        """Append one session as one line."""
        self._write(_encode_line(session.to_json()))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----"
)


def certificate_blocks(text: str) -> list[str]:
    """Every PEM certificate block in ``text``, each on its own and written the one same way
    (64 characters a line, one newline at the end); [] when there is none."""
    blocks = []
    for match in _PEM_CERTIFICATE.finditer(text):
        body = "".join(match.group(1).split())
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        blocks.append(
            "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----"]) + "\n"
        )
    return blocks


def _certificate_list(path: Path, texts: Sequence[str]) -> list[str]:
    """The header's ``ca_certificates``: one block per certificate, each once, in order."""
    found: list[str] = []
    for number, text in enumerate(texts, 1):
        blocks = certificate_blocks(text)
        if not blocks:
            raise RecordingError(
                path,
                f"CA certificate {number} given for the header holds no PEM certificate; "
                "pass the text of a PEM file",
            )
        found += [block for block in blocks if block not in found]
    return found


def _pem_key(pem: str) -> str:
    """What makes two PEM texts the same certificate: the base64 between the markers."""
    blocks = certificate_blocks(pem)
    return "".join(blocks[0].split()) if blocks else pem


def _count(number: int, noun: str) -> str:
    if noun == "other":
        return "none" if number == 0 else f"{number} other{'s' if number != 1 else ''}"
    return f"{'no' if number == 0 else number} {noun}{'s' if number != 1 else ''}"


def _encode_line(data: dict[str, Any]) -> bytes:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    # Lone surrogates (bytes smuggled through surrogateescape) become \udcXX escapes,
    # which is still valid JSON and reads back to the same string.
    return (text + "\n").encode("utf-8", "backslashreplace")
