"""Ask a TLS server for its certificate with a given SNI.

Used when a client sent no SNI and got a certificate that does not match:
asking again by name shows whether the server would have sent the right
certificate (the ``no-sni-default-certificate`` cause).
"""

from __future__ import annotations

import asyncio
import base64
import ssl

from certmatch.facts import SniProbe


async def probe_with_sni(ip: str, port: int, sni: str, *, timeout: float = 3.0) -> SniProbe:
    """Connect to ``ip:port``, send ``sni``, and return the certificate presented.

    Never raises: a failure is recorded in ``SniProbe.error``. Only the leaf
    is recorded (Python 3.12's ssl module does not expose the rest of an
    unverified chain); the leaf is what names are judged on.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(ip, port, ssl=context, server_hostname=sni),
            timeout,
        )
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            return SniProbe(sni=sni, error="the server sent no certificate")
        return SniProbe(sni=sni, chain=[base64.b64encode(der).decode("ascii")])
    except TimeoutError:
        return SniProbe(sni=sni, error=f"no answer from {ip}:{port} within {timeout:g} s")
    except (OSError, ssl.SSLError, ValueError) as exc:
        return SniProbe(sni=sni, error=f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (TimeoutError, OSError, ssl.SSLError):
                pass
