"""Real mail and directory servers on loopback for certmatch's tests.

Each module starts one kind of server (dovecot, aiosmtpd, slapd, INN nnrpd) with
certificates minted by the tests; ``clients`` holds real clients that dial
loopback but ask for a host name. The pytest fixtures live in tests/conftest.py.
"""

from .certs import CertFiles, CertSpec, MintedPki, mint_all
from .dovecot import DovecotServer, start_dovecot
from .inn import NnrpdServer, start_nnrpd
from .process import MissingSystemPackage, ServerStartError
from .slapd import SlapdServer, start_slapd
from .smtp import ReceivedMessage, SmtpServer, start_smtp

__all__ = [
    "CertFiles",
    "CertSpec",
    "DovecotServer",
    "MintedPki",
    "MissingSystemPackage",
    "NnrpdServer",
    "ReceivedMessage",
    "ServerStartError",
    "SlapdServer",
    "SmtpServer",
    "mint_all",
    "start_dovecot",
    "start_nnrpd",
    "start_slapd",
    "start_smtp",
]
