"""The Public Suffix List look-ups (certmatch.core.public_suffixes) against publicsuffix2's own
answers on every ICANN rule, and the list's algorithm on its documented examples."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import publicsuffix2
import pytest

from certmatch.core import identity
from certmatch.core.public_suffixes import PublicSuffixes

pytestmark = pytest.mark.pure


def _text() -> str:
    spec = importlib.util.find_spec("publicsuffix2")
    assert spec is not None and spec.submodule_search_locations
    return (Path(spec.submodule_search_locations[0]) / "public_suffix_list.dat").read_text("utf-8")


TEXT = _text()
RULES = PublicSuffixes.from_text(TEXT, identity._to_ascii)


def _icann_names() -> list[str]:
    names: set[str] = set()
    for line in TEXT.split("// ===END ICANN DOMAINS===")[0].splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        base = identity._to_ascii(line.split()[0].lstrip("!").removeprefix("*."))
        if base:
            names.update((base, f"x.{base}", f"a.b.{base}"))
    return sorted(names)


def _as_a_labels(rule: str) -> str:
    marker = "!" if rule.startswith("!") else "*." if rule.startswith("*.") else ""
    return marker + (identity._to_ascii(rule[len(marker) :]) or "")


def test_every_icann_rule_is_answered_as_publicsuffix2_answers() -> None:
    icann = TEXT.split("// ===END ICANN DOMAINS===")[0].splitlines()
    rules = [line.split()[0] for line in icann if line.strip() and not line.startswith("//")]
    reference = publicsuffix2.PublicSuffixList([_as_a_labels(r) for r in rules], idna=False)
    names = _icann_names()
    assert len(names) > 15_000
    differ = [
        name
        for name in names
        if RULES.is_public_suffix(name) != (reference.get_tld(name, wildcard=True) == name)
        or RULES.registrable_domain(name) != reference.get_sld(name, wildcard=True)
        and "." in (reference.get_sld(name, wildcard=True) or "")
    ]
    assert differ == []


@pytest.mark.parametrize(
    ("domain", "registrable", "public"),
    [
        ("example.com", "example.com", False),
        ("www.example.co.uk", "example.co.uk", False),
        ("co.uk", "co.uk", True),
        ("b.c.kobe.jp", "b.c.kobe.jp", False),  # *.kobe.jp: c.kobe.jp is a suffix
        ("c.kobe.jp", "c.kobe.jp", True),
        ("kobe.jp", "kobe.jp", True),  # the base of a wildcard rule: *.kobe.jp is refused
        ("www.city.kobe.jp", "city.kobe.jp", False),  # the exception !city.kobe.jp
        ("city.kobe.jp", "city.kobe.jp", False),
        ("mail.example.test", "example.test", False),  # unlisted: the default rule "*"
        ("test", "test", True),
        ("blogspot.com", "blogspot.com", False),  # private section: not counted
    ],
)
def test_the_lists_own_examples(domain: str, registrable: str, public: bool) -> None:
    assert RULES.registrable_domain(domain) == registrable
    assert RULES.is_public_suffix(domain) is public


def test_internationalised_rules_are_converted_when_an_a_label_is_looked_up() -> None:
    rules = PublicSuffixes.from_text(TEXT, identity._to_ascii)
    assert rules._unconverted, "the IDN rules wait until a name needs them"
    assert rules.is_public_suffix("xn--55qx5d.cn")  # 公司.cn
    assert rules.registrable_domain("mail.example.xn--55qx5d.cn") == "example.xn--55qx5d.cn"
    assert not rules._unconverted
