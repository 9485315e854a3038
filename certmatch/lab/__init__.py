"""The lab: test PKI, embedded mail servers, replay, the demo and the pytest plugin.

It uses the core and sockets, and the proxy only through its public entry points.
"""
