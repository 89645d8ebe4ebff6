# SPDX-License-Identifier: GPL-2.0-only
"""Session data a client keeps for resumption, sealed so only ours reaches GnuTLS.

The blob a ``SessionTicket`` event carries goes to the socket (SESSION_TICKET) and
comes back through whoever holds the socket.  GnuTLS 3.7 (Debian bookworm) crashes
in ``gnutls_deinit`` after ``gnutls_session_set_data`` refused a malformed blob
(found by fuzzing: ``tests/test_fuzz_regressions.py``), so a blob goes to GnuTLS
only when its tag shows this daemon made it.  The key is made at import, before the
daemon forks its workers, so any worker opens any worker's tickets; after a restart
old tickets are refused and the client makes a full handshake instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os

_KEY = os.urandom(32)
TAG_SIZE = 16


def _tag(data: bytes) -> bytes:
    return hmac.digest(_KEY, data, hashlib.sha256)[:TAG_SIZE]


def seal(data: bytes) -> bytes:
    """GnuTLS session data as handed out: tag, then the data."""
    return _tag(data) + data


def unseal(blob: bytes) -> bytes:
    """The session data inside ``blob``, or ``b""`` (no resumption) when it is not ours."""
    tag, data = blob[:TAG_SIZE], blob[TAG_SIZE:]
    return data if data and hmac.compare_digest(tag, _tag(data)) else b""
