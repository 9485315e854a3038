"""The README's cause table says what the catalogue says: ids, order, severity and citations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from certmatch.core import causes

pytestmark = pytest.mark.pure

README = Path(__file__).resolve().parent.parent / "README.md"


def _table_rows() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Causes") :]
    rows = [line for line in section.splitlines() if re.match(r"^\| `[a-z0-9-]+` \|", line)]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_cause_table_lists_the_catalogue_in_its_order():
    listed = [row[0].strip("`") for row in _table_rows()]
    assert listed == list(causes.PRIMARY_ORDER)


def test_each_row_has_the_catalogues_severity_and_citations():
    for cause_id, severity, _title, rests_on in _table_rows():
        cause = causes.get(cause_id.strip("`"))
        assert severity == cause.severity, cause.id
        cited = "; ".join(f"{c.source} {c.section}".strip() for c in cause.citations)
        assert rests_on == cited, cause.id
