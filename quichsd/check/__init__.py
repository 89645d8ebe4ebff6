# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check``: can this machine run the daemon with this configuration?

Each check gives ✓ (fine), ! (works, but read the note) or ✗ (the daemon
cannot do its job), with the fix for everything not ✓.  Exit status 0 when
nothing is ✗, 1 otherwise, so scripts and packaging hooks can use it.

What is checked, in order (one module per concern): the kernel's handshake
netlink family and CAP_NET_ADMIN (ACCEPT needs it), the transports (the QUIC
module, kTLS), GnuTLS (version, and the binding with its QUIC hooks) and the
keyrings (``host``); the configuration file (``configuration``); and for each
side's certificate, key, trust store and CRL: readable, parsable, key matching
certificate, within its validity, chained to a trust anchor, judged by the same
GnuTLS calls the daemon's handshakes make (``x509``, over ``tls/verify.py``).
The table and the exit status: ``report``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from quichsd.check.configuration import check_config
from quichsd.check.environment import Environment
from quichsd.check.host import (
    check_cap_net_admin,
    check_family,
    check_gnutls,
    check_keyrings,
    check_psk_binders,
    check_transports,
)
from quichsd.check.report import Check, State, can_encode, exit_status, render
from quichsd.check.x509 import check_side


def run_checks(config_path: Path | None, env: Environment | None = None) -> list[Check]:
    env = env or Environment()
    checks = [check_family(env), check_cap_net_admin(env)]
    checks += check_transports(env)
    checks.append(check_gnutls())
    if checks[-1].state == "ok":
        checks.append(check_psk_binders())
    config_checks, config = check_config(config_path)
    checks += check_keyrings(env, config)
    checks += config_checks
    if config is not None:
        checks += check_side("client", config.client, env, config.server)
        checks += check_side("server", config.server, env, config.client)
    return checks


def main(config_path: Path | None) -> int:
    # What the certificate parser warns about is in the table (x509.load_certificates), once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = run_checks(config_path)
    sys.stdout.write(render(checks, unicode=can_encode("✓✗")))
    return exit_status(checks)


__all__ = ["Check", "Environment", "State", "exit_status", "main", "render", "run_checks"]
