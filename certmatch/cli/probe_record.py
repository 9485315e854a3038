"""Recording a probed session with its DNS facts, until the facts have a field for them.

The line gets a ``"dns"`` key (:meth:`DnsFacts.to_json`); readers that do not know it
ignore it, as the recording format allows unknown properties.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from certmatch.core.dns_facts import DnsFacts
from certmatch.core.facts import SessionFacts


class _SessionWithDns(SessionFacts):
    """A session whose recorded line also carries its DNS facts under ``"dns"`` (a reader
    that does not know the field ignores it, as the format allows)."""

    dns: DnsFacts | None = None

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.dns is not None:
            data["dns"] = self.dns.to_json()
        return data


def with_dns(session: SessionFacts, dns: DnsFacts | None) -> SessionFacts:
    if dns is None:
        return session
    copy = _SessionWithDns(
        **{f.name: getattr(session, f.name) for f in dataclasses.fields(SessionFacts)}
    )
    copy.dns = dns
    return copy
