"""The side-handshake cache: one handshake per server, SNI, offered versions and ALPN."""

from __future__ import annotations

import asyncio

from certmatch.net.side_handshake import SideHandshakes


def test_a_client_offering_other_versions_or_alpn_gets_its_own_side_handshake() -> None:
    async def scenario() -> tuple[list[bool], int]:
        cache = SideHandshakes(ttl=60, timeout=1)
        name = "imap.example.test"
        asks: list[tuple[str | None, list[str], list[str]]] = [
            (name, ["TLSv1.3"], []),
            (name, ["TLSv1.3"], []),  # the same: shared
            (name, ["TLSv1.2"], []),
            (name, ["TLSv1.3"], ["imap"]),
            (None, ["TLSv1.3"], []),
        ]
        shared: list[bool] = []
        tasks = []
        for sni, versions, alpn in asks:
            task, was_shared = cache.get("127.0.0.1", 9, sni=sni, versions=versions, alpn=alpn)
            shared.append(was_shared)
            tasks.append(task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return shared, cache.made

    shared, made = asyncio.run(scenario())
    assert shared == [False, True, False, False, False]
    assert made == 4
