"""Close a connection mitmproxy cancels while its end-of-file is still being delivered.

mitmproxy's ``ConnectionHandler.handle_connection`` reads a connection until end-of-file,
then delivers ``ConnectionClosed`` through ``server_event``, which first waits for the
handler's event lock. If another connection's event meanwhile makes a layer close this one
(``CloseConnection``), mitmproxy cancels the reading task while it waits for that lock: the
``CancelledError`` leaves ``handle_connection`` before it closes the socket's writer, so the
socket stays in CLOSE-WAIT and the client waits for a close that never comes. certmatch's
STARTTLS layer closes both sides when the server ends a plaintext session, so a client that
hangs up at the same moment hit this about once in fifteen tries (tests/test_server_faults.py).

:func:`install` wraps ``handle_connection`` once per process: on that cancellation it closes
the writer and forgets the transport, as the method itself does on its normal way out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

_MARK = "_certmatch_closes_on_cancel"


def install() -> None:
    """Wrap mitmproxy's ``ConnectionHandler.handle_connection`` (idempotent)."""
    from mitmproxy.proxy import server

    original = server.ConnectionHandler.handle_connection
    if getattr(original, _MARK, False):
        return

    async def handle_connection(self: Any, connection: Any) -> None:
        try:
            await original(self, connection)
        except asyncio.CancelledError:
            io = self.transports.pop(connection, None)  # still there: its writer is open
            if io is not None and io.writer is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    io.writer.close()
            raise

    setattr(handle_connection, _MARK, True)
    server.ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]
