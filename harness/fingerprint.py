"""Fingerprints stand in for secrets in every log, record and report.

A ticket, PSK identity, session id or flash blob is shown only as the first
12 hex digits of its SHA-256: enough to follow one ticket through a run,
useless to an attacker who reads a CI artifact.
"""

from __future__ import annotations

import hashlib

FP_LEN = 12


def fp(data: bytes | bytearray | memoryview | None) -> str | None:
    if data is None:
        return None
    return hashlib.sha256(bytes(data)).hexdigest()[:FP_LEN]
