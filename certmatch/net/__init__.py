"""Network I/O without mitmproxy: the SNI probe (and, later, DNS lookups)."""
