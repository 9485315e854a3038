"""Hostile names never reach a terminal raw: one escaping function, used by every renderer.

A client's SNI, a certificate's names and any recording field can carry terminal escape
sequences (``\\x1b]2;title\\x07``, DECALN ``\\x1b#8``), C1 controls (``\\x9b`` is CSI on many
terminals), bidi overrides that reorder what is shown, line separators, lone surrogates
(which crash an encoder) and Rich markup (``[bold]``). Every renderer shows them escaped,
unambiguously, and never escapes a name twice.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import re
import unicodedata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from certmatch.core import report
from certmatch.core.diagnosis import Diagnosis
from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judge
from certmatch.core.recording import RecordingWriter
from certmatch.core.text import printable
from certmatch.core.trust import TrustStore
from certmatch.lab import pki
from certmatch.proxy.capture import verdict_log_line
from certmatch.tui.app import CertmatchApp
from certmatch.tui.detail import render_detail
from certmatch.tui.model import Row
from certmatch.tui.session_list import SessionList, shorten_names

pytestmark = pytest.mark.pure

BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ATTACK = "\x1b]2;PWNED\x07\x1b[31mred\x1b#8.example.test"


def dangerous(char: str) -> bool:
    """The classes no renderer may emit raw, defined independently of the code under test."""
    code = ord(char)
    return (
        code < 0x20  # C0, including ESC, BEL, CR, LF
        or 0x7F <= code <= 0x9F  # DEL and C1 (CSI is 0x9b, OSC 0x9d)
        or char in BIDI
        or 0xD800 <= code <= 0xDFFF  # lone surrogates
        or char in "\u2028\u2029"  # line and paragraph separators
        or unicodedata.category(char) == "Cf"  # other invisible format characters
    )


def assert_safe(rendered: str, what: str = "") -> None:
    """No dangerous character on any line (lines joined by the renderer's own newlines)."""
    for line in rendered.split("\n"):
        bad = [c for c in line if dangerous(c)]
        assert not bad, f"{what}: raw {bad!r} in {line!r}"


def unescape(shown: str) -> str:
    """The inverse of ``printable``: proves two different strings never show the same."""
    out: list[str] = []
    i = 0
    while i < len(shown):
        char = shown[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        kind = shown[i + 1]
        if kind == "\\":
            out.append("\\")
            i += 2
            continue
        digits = {"x": 2, "u": 4, "U": 8}[kind]
        out.append(chr(int(shown[i + 2 : i + 2 + digits], 16)))
        i += 2 + digits
    return "".join(out)


DANGEROUS_SAMPLES = [
    *(chr(c) for c in range(0x20)),
    *(chr(c) for c in range(0x7F, 0xA0)),
    *BIDI,
    "\u2028",
    "\u2029",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u00ad",
    "\ud800",
    "\udc80",
    "\udfff",
    "\U000e0001",
]
# Arbitrary text (surrogates included), with the dangerous and the ambiguous made likely.
hostile_char = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from([*DANGEROUS_SAMPLES, "\\", "[", "]", "[bold]", "x", "u", "1b", "ü"]),
)
hostile = st.lists(hostile_char, max_size=24).map("".join)


# --- the escaping function ----------------------------------------------------------------


@given(hostile)
def test_printable_emits_no_dangerous_character_and_is_reversible(text):
    shown = printable(text)
    assert_safe(shown)
    assert "\n" not in shown
    assert unescape(shown) == text  # so distinct inputs show distinct


@given(hostile, hostile)
def test_printable_keeps_distinct_strings_distinct(a, b):
    if a != b:
        assert printable(a) != printable(b)


@given(hostile)
def test_prose_escaping_is_safe_and_never_escapes_twice(text):
    once = printable(text, escape_backslash=False)
    assert_safe(once)
    assert printable(once, escape_backslash=False) == once
    # A diagnosis quotes names through printable; showing its sentence changes nothing more.
    assert report.shown_prose(f"the name {printable(text)} is wrong") == (
        f"the name {printable(text)} is wrong"
    )


@pytest.mark.parametrize(
    "text",
    ["mail.example.com", "bücher.example", "xn--bcher-kva.example", "名前.example", "a b", "👍"],
)
def test_ordinary_text_is_shown_as_it_is(text):
    assert printable(text) == text
    assert report.shown_prose(text) == text


def test_the_reported_attack_is_shown_as_escapes():
    assert printable(ATTACK) == r"\x1b]2;PWNED\x07\x1b[31mred\x1b#8.example.test"
    assert printable("a\x9bb\u202ec\ud800\\") == r"a\x9bb\u202ec\ud800\\"


# --- every renderer -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_pki(tmp_path_factory):
    """A CA, and leaves whose names carry an attack: ASCII controls and markup in a SAN (a SAN
    is ASCII), C1, bidi and a line separator in a CN-only certificate (UTF8String)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca("escaping test CA")
    (directory / "ca.pem").write_bytes(ca.cert_pem())
    leaves = [
        pki.issue_leaf(ca, dns=[ATTACK, "[bold]x[/bold].example.test", "ok.example.test"]),
        pki.issue_leaf(ca, cn="a\x9b2J\u202etset.elpmaxe\u2028[red]b\\x1b.example.test"),
    ]
    store = TrustStore.load([directory / "ca.pem"], use_system=False)
    return store, leaves


def chain_of(leaf: pki.Issued) -> list[str]:
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in leaf.chain()]


def hostile_facts(leaf: pki.Issued, *, host: str, sni: str | None, other: str) -> SessionFacts:
    return SessionFacts(
        id=f"id-{other}",
        started=(leaf.cert.not_valid_before_utc + dt.timedelta(hours=1))
        .isoformat()
        .replace("+00:00", "Z"),
        client_address=other,
        protocol=other or "imap",
        requested_host=host,
        requested_host_source="sni",
        sni=sni,
        chain=chain_of(leaf),
        server_address=f"{other}:993",
        server_error=other or None,
        notes=[other],
    )


def renderings(d: Diagnosis, judge: Judge) -> dict[str, str]:
    """What each renderer shows for ``d``: the CLI, the plugin, the proxy log, the TUI."""
    f = d.facts
    judgement = judge.judgement(f)
    row = Row(
        0,
        0,
        f.started,
        f.protocol,
        f.client_address or "",
        f.requested_host or "",
        f.requested_host_source,
        f.sni,
        judgement,
    )
    listing = SessionList([row])
    segments = listing._row_segments(0, listing.rich_style)
    return {
        "session_line": report.session_line(d),
        "explain": report.explain(d),
        "describe": report.describe(d),
        "log": verdict_log_line(f, d),
        "log-no-verdict": verdict_log_line(f, None),
        "detail": render_detail(d, f"/tmp/{f.protocol}.jsonl", group_count=2).plain,
        "row": "".join(s.text for s in segments),
        "names": shorten_names(judgement.presented_names, 400),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1), hostile, st.one_of(st.none(), hostile), hostile)
def test_every_renderer_escapes_every_hostile_field(hostile_pki, which, host, sni, other):
    store, leaves = hostile_pki
    judge = Judge(store)
    d = judge.diagnose(hostile_facts(leaves[which], host=host, sni=sni, other=other))
    shown = renderings(d, judge)
    for name, text in shown.items():
        assert_safe(text, name)
    # Each field appears exactly as printable shows it: escaped once, unambiguously.
    assert printable(host or "?") in shown["session_line"]
    assert f"'{printable(host)}'" in shown["describe"]
    assert printable(host) in shown["log"] and printable(host) in shown["detail"]
    if sni is not None:
        assert f"SNI {printable(sni)})" in shown["describe"]
        assert printable(sni) in shown["row"] or len(printable(sni)) > 23
    assert printable(other) in shown["detail"]


@pytest.mark.parametrize("which", [0, 1])
def test_certificate_names_are_escaped_once_everywhere(hostile_pki, which):
    """The diagnosis quotes names through printable; no renderer escapes them again."""
    store, leaves = hostile_pki
    judge = Judge(store)
    d = judge.diagnose(hostile_facts(leaves[which], host="mail.example.test", sni=None, other=""))
    shown = renderings(d, judge)
    expected = (
        [ATTACK, "[bold]x[/bold].example.test"]
        if which == 0
        else ["CN=a\x9b2J\u202etset.elpmaxe\u2028[red]b\\x1b.example.test"]
    )
    assert printable(expected[0])[:40] in shown["session_line"]  # the column is 48 wide
    for name in expected:
        for renderer in ("describe", "log", "names"):
            assert printable(name) in shown[renderer], renderer
    if which == 0:  # no backslash in these names: a doubled one would be a second escape
        for renderer, text in shown.items():
            assert r"\\x1b" not in text, renderer
    for renderer, text in shown.items():
        assert_safe(text, renderer)


# --- the TUI, end to end ----------------------------------------------------------------------


def screen_text_and_svg(app: CertmatchApp) -> tuple[str, str]:
    """The screen as a terminal would receive it, exported as plain text and as SVG."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        record=True,
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
        file=io.StringIO(),
    )
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text(styles=False), app.export_screenshot()


def test_the_tui_shows_a_hostile_sni_and_certificate_name_escaped(hostile_pki, tmp_path: Path):
    store, leaves = hostile_pki
    path = tmp_path / "hostile.jsonl"
    with RecordingWriter(path, tool_version="test") as writer:
        writer.write(hostile_facts(leaves[0], host=ATTACK, sni=ATTACK + "\x1b[2J", other="imap"))
        writer.write(
            hostile_facts(leaves[1], host="mail.example.test", sni="\u202eevil\x9b", other="smtp")
        )
    app = CertmatchApp([path], store=store, show_all=True)

    async def run() -> list[tuple[str, str]]:
        screens = []
        async with app.run_test(size=(200, 60)) as pilot:
            while not app.sessions.initial_load_done:
                await pilot.pause(0.02)
            for _ in range(2):
                await pilot.pause(0.1)
                screens.append(screen_text_and_svg(app))
                await pilot.press("j")
        return screens

    screens = asyncio.run(run())
    first, second = (text for text, _ in screens)
    for text, svg in screens:
        assert_safe(text)
        assert not [c for c in svg if dangerous(c) and c != "\n"]
    assert r"\x1b]2;PWNED\x07\x1b[31mred\x1b#8.example.test" in first
    assert r"\x1b[2J" in first  # the SNI, in the list
    assert r"\u202eevil\x9b" in second
    assert r"CN=a\x9b2J\u202etset.elpmaxe\u2028[red]b\\x1b.example.test" in second
    assert re.search(r"\[bold\]x\[/bold\]\.example\.test", first)  # markup shown, not applied
