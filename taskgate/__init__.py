"""The Python client of taskgate's HTTP API: `from taskgate.client import Client`.

Depends on httpx and msgspec only; nothing of the server (core/, handlers/) is imported, so
the client can run where the gateway's dependencies are not installed.
"""
