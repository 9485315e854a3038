"""The domain, pure: facts, the recording format, identity rules, certificates, trust,
causes, diagnosis, the STARTTLS state machines and the protocol vocabulary.

No mitmproxy, Textual, pytest, sockets, asyncio or threads: import-linter keeps it so.
"""
