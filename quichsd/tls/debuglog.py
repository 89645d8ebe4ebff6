# SPDX-License-Identifier: GPL-2.0-only
"""``[debug] tls=``: GnuTLS's own debug log, as tlshd turns it on, into our logger.

tlshd passes ``tls`` to ``gnutls_global_set_log_level()`` and logs each
message at debug priority as ``gnutls(<level>): <message>``; so do we, on the
``quichsd.gnutls`` logger, whatever ``loglevel`` says.

The level is capped at ``MAX_LEVEL`` (8), below GnuTLS's "hard" log: from
level 9 up GnuTLS prints secrets in hex (its ``INT:`` lines: the TLS 1.2
premaster secret and key block, GOST private keys), and from 10 up it traces
every read and write.  Key material must never reach a
log (docs/ARCHITECTURE.md), so a configured 9 or more acts as 8 (with a
warning from the caller), and a message that still looks like a key dump is
dropped here.  Handshakes run in the workers: each applies the level its job
carries before GnuTLS sees the peer's bytes, so a reload reaches every worker.
"""

from __future__ import annotations

import logging
from typing import Any

from quichsd.tls._gnutls import ffi, lib

#: The highest GnuTLS log level that prints no key material (9 and up do).
MAX_LEVEL = 8
log = logging.getLogger("quichsd.gnutls")
_current: int | None = None


@ffi.def_extern()  # type: ignore[untyped-decorator]
def qd_py_gnutls_log(level: int, message: Any) -> None:
    text = ffi.string(message).decode("utf-8", "replace").rstrip("\n")
    if text.startswith("INT: "):  # a key dump: only hard-log levels print them, never kept
        return
    log.debug("gnutls(%d): %s", level, text)


def set_gnutls_debug(level: int) -> int:
    """Turns GnuTLS's log on at ``level`` (capped), or off at 0; returns the level used."""
    global _current
    used = max(0, min(level, MAX_LEVEL))
    if used != _current:
        if _current is None:
            lib.gnutls_global_set_log_function(lib.qd_py_gnutls_log)
        lib.gnutls_global_set_log_level(used)
        log.setLevel(logging.DEBUG if used > 0 else logging.INFO)
        _current = used
    return used
