"""What the TUI knows of the proxy it shows live: its process, its log, where it listens.

``certmatch proxy --tui`` runs mitmdump in a child process that writes its log to
``FILE.proxy.log``. The TUI watches both, so that a proxy that failed to start, died, or
reports an error is shown at once (a banner with the log's last lines), and so that the
status says where the proxy listens, in which mode, and which CA a client must trust.

No Textual here: ``certmatch proxy`` also uses ``wait_until_listening`` before the TUI starts.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from certmatch.core.text import printable

# The TUI's exit status when the proxy it watched had stopped before the user quit: the
# recording ends early, and a script that ran `certmatch proxy --tui` must be able to tell.
EXIT_PROXY_STOPPED = 2

# The line ``certmatch proxy`` prints once mitmproxy listens (cli/proxy.py ``listen_banner``).
_LISTENING = re.compile(r"proxy listening on (?P<where>.*), recording to ")
_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d(\.\d+)?\] ")
# Lines that mean the proxy is in trouble, not one session: mitmproxy's failure to bind and
# its startup check, a crash, and certmatch's own errors (a recording it cannot write).
ERROR_MARKERS = (
    "failed to listen on",
    "Error logged during startup",
    "Traceback (most recent call last)",
    "has crashed",
    "certmatch: could not write",
    "certmatch: internal error",
)
WARNING_MARKERS = ("certmatch: WARNING:", "certmatch: warning:")
# mitmproxy's last word when a mode fails to start; the cause is the log entry it ends.
STARTUP_FAILED = "Error logged during startup"
# Lines of a Rust or Python stack in that entry: noise in a banner.
_STACK_LINE = re.compile(r"^\s*(\d+: |at |File \"|Stack backtrace:|Traceback \(most recent)")
ENTRY_LINES_KEPT = 6
# What to do about the errors a person meets most, by words in the error.
ADVICE = (
    (
        "address already in use",
        (
            "Another program listens on that port: stop it, or give the proxy another port "
            "(--listen-port, or @PORT in --mode)."
        ),
    ),
    (
        "Permission denied",
        "Ports below 1024 need privileges: use a port above 1024 (--listen-port).",
    ),
    (
        "could not write",
        "Sessions are not being recorded: check the disk space and the recording file.",
    ),
)
ERRORS_KEPT = 3
TAIL_LINES = 6
_READ_AT_MOST = 256 * 1024  # of new log text per check; the rest is read by the next checks
_LONGEST_LINE = 2000  # a log line is cut to this many characters for the banner


class ProcessLike(Protocol):
    """What is needed of the proxy's process (a ``subprocess.Popen``)."""

    def poll(self) -> int | None: ...


def mitmproxy_ca_cert(confdir: str | Path | None) -> Path:
    """The CA certificate clients must trust: ``mitmproxy-ca-cert.pem`` in mitmproxy's
    configuration directory (``~/.mitmproxy`` unless ``--confdir`` says otherwise)."""
    return Path(confdir or "~/.mitmproxy").expanduser() / "mitmproxy-ca-cert.pem"


@dataclass
class ProxyState:
    """The proxy as last seen: running or not, where it listens, what went wrong."""

    running: bool = True
    exit_code: int | None = None
    listening: str = ""  # "127.0.0.1:8080 (reverse:tls://mail.example.com:993)"; "" until it says
    errors: int = 0  # error lines seen in its log
    first_errors: list[str] = field(default_factory=list)  # the first few, as they read
    last_error: str = ""
    warning: str = ""  # the latest warning (e.g. it listens beyond this machine)
    tail: list[str] = field(default_factory=list)  # the log's last lines

    @property
    def advice(self) -> str:
        """What to do about the errors seen, when certmatch knows; else ""."""
        seen = " ".join([*self.first_errors, self.last_error])
        return " ".join(text for words, text in ADVICE if words in seen)

    @property
    def failed(self) -> bool:
        """The proxy stopped or reported an error: the TUI shows a red banner."""
        return not self.running or self.errors > 0


class LiveProxy:
    """A running ``certmatch proxy`` child: its process, its log and what it was asked to do.

    ``log_offset`` is where this run's output starts in the log (the file is appended to
    across runs). ``stop_signal()`` is the signal that asked the TUI to stop, if any. ``check`` reads what the log gained since the last call and polls the
    process; it never blocks.
    """

    def __init__(
        self,
        process: ProcessLike,
        log_path: Path,
        *,
        modes: Sequence[str],
        ca_cert: Path,
        log_offset: int = 0,
        stop_signal: Callable[[], int | None] = lambda: None,
        observe: bool = False,
    ) -> None:
        self.process = process
        self.stop_signal = stop_signal
        self.observe = observe  # relays TLS: clients check the server's own certificate
        self.log_path = Path(log_path)
        self.modes = tuple(modes)
        self.ca_cert = Path(ca_cert)
        self.state = ProxyState()
        self._offset = log_offset
        self._partial = b""
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._entry: list[str] = []  # the log entry being read: a timestamped line and its own

    def check(self) -> ProxyState:
        """Read the log's new lines and poll the process; the state, updated."""
        code = self.process.poll()
        self._read_log()
        if code is not None:
            self._read_log()  # what it wrote just before it exited
            if self._partial:
                self._line(self._partial)
                self._partial = b""
            self.state.running = False
            self.state.exit_code = code
        self.state.tail = list(self._tail)
        return self.state

    def wait_until_listening(self, timeout: float, interval: float = 0.05) -> ProxyState:
        """Wait until the proxy says it listens, stops, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        state = self.check()
        while state.running and not state.listening and time.monotonic() < deadline:
            time.sleep(interval)
            state = self.check()
        return state

    @property
    def mode_text(self) -> str:
        return ", ".join(printable(mode) for mode in self.modes)

    def _read_log(self) -> None:
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, 2)
                if size < self._offset:  # truncated by hand: read it from its start
                    self._offset, self._partial = 0, b""
                log.seek(self._offset)
                data = log.read(_READ_AT_MOST)
        except OSError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _READ_AT_MOST:
            self._partial = self._partial[:_LONGEST_LINE]
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        decoded = raw.decode("utf-8", "replace").rstrip("\r")
        text = _TIMESTAMP.sub("", decoded)
        if text != decoded:
            self._entry = []  # a new log entry starts
        if not text.strip():
            return
        shown = printable(text[:_LONGEST_LINE])
        self._tail.append(shown)
        if STARTUP_FAILED in text and self._entry and not self.state.errors:
            # "Failed to run sudo. Caused by: No such file or directory": the cause, without
            # the stack that follows it, as one error before mitmproxy's last word (when no
            # error came before it: a failure to listen is told on its own line).
            cause = " ".join(line.strip() for line in self._entry if not _STACK_LINE.match(line))
            cause = printable(cause[:_LONGEST_LINE])
            if (
                cause
                and cause not in self.state.first_errors
                and len(self.state.first_errors) < ERRORS_KEPT
            ):
                self.state.errors += 1
                self.state.first_errors.append(cause)
            self._entry = []
        elif len(self._entry) < ENTRY_LINES_KEPT:
            self._entry.append(text)
        if found := _LISTENING.search(text):
            self.state.listening = printable(found["where"])
        elif any(marker in text for marker in ERROR_MARKERS):
            self.state.errors += 1
            self.state.last_error = shown
            if len(self.state.first_errors) < ERRORS_KEPT:
                self.state.first_errors.append(shown)
        elif any(marker in text for marker in WARNING_MARKERS):
            self.state.warning = shown
