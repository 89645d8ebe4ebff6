# SPDX-License-Identifier: GPL-2.0-only
"""A worker's jobs, one per transport: ``quic`` and ``tcp``, over what they share
(``common``: credentials, the peer's address, the Outcome).  Which job serves a
request is decided in one place, ``daemon/dispatch.py``.
"""
