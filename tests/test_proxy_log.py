"""Which sessions the proxy logs (issue 12): every failure and every finding; a clean match
only with ``termlog_verbosity=debug``, since each log line costs mitmproxy some 2 % of a
handshake's CPU and the recording holds every session."""

from __future__ import annotations

import logging

import pytest
from mitmproxy.addons import termlog
from mitmproxy.test import taddons

from certmatch.core.facts import SessionFacts
from certmatch.core.judge import Judgement
from certmatch.proxy import capture

pytestmark = pytest.mark.pure


def _judgement(verdict: str, causes: tuple[str, ...], failed: bool) -> Judgement:
    return Judgement(
        verdict=verdict,  # type: ignore[arg-type]
        failed=failed,
        primary=causes[0] if causes else "",
        causes=causes,
        presented_names=("imap.example.test",),
        leaf_sha256="",
    )


FACTS = SessionFacts(id="1", started="2026-01-01T00:00:00+00:00", sni="imap.example.test")
FACTS.requested_host = "imap.example.test"


@pytest.mark.parametrize(
    ("verdict", "causes", "failed", "verbosity", "logged"),
    [
        ("match", (), False, "info", None),
        ("match", (), False, "debug", logging.INFO),
        ("match", ("underscore-in-name",), False, "info", logging.INFO),
        ("mismatch", ("name-not-in-certificate",), True, "info", logging.WARNING),
    ],
)
def test_which_verdicts_are_logged(caplog, verdict, causes, failed, verbosity, logged):
    with taddons.context(capture.CertmatchCapture(), termlog.TermLog()) as tctx:
        tctx.options.termlog_verbosity = verbosity
        caplog.set_level(logging.DEBUG, logger="certmatch")
        capture.log_verdict(FACTS, _judgement(verdict, causes, failed))
    records = [r for r in caplog.records if r.name == "certmatch"]
    assert [r.levelno for r in records] == ([logged] if logged else [])
    if logged:
        assert "imap.example.test" in records[0].getMessage()
        assert verdict in records[0].getMessage()
