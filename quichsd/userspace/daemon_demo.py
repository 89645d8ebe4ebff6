# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd demo --daemon``: the real daemon serving requests on the userspace models.

For a machine whose kernel lacks net/handshake: the unmodified ``quichsd
serve`` (parent + pre-forked workers) answers QUIC handshake requests from the
handshake-family model, on QUIC sockets of the kernel-socket model, against an
aioquic server on 127.0.0.1 — and the daemon's own log shows each one.
"""

from __future__ import annotations

import errno
import sys
import tempfile
from pathlib import Path

from quichsd.tls.selfsigned import issue, make_ca
from quichsd.userspace import missing

SERVER_NAME = "server.demo.test"


def run_daemon_demo() -> int:
    problem = missing()
    if problem is not None:
        print(f"quichsd: {problem}", file=sys.stderr)
        return 1
    from quichsd.userspace.aioquic_seam import start_echo_server
    from quichsd.userspace.rig import DaemonRig, config_text

    tmp = Path(tempfile.mkdtemp(prefix="quichsd-demo-"))
    ca = make_ca()
    leaf = issue(ca, (SERVER_NAME,))
    for name, data in (
        ("ca.pem", ca.cert_pem),
        ("cert.pem", leaf.cert_pem),
        ("key.pem", leaf.key_pem),
    ):
        (tmp / name).write_bytes(data)
    loop, address = start_echo_server(tmp / "cert.pem", tmp / "key.pem", "echo")
    cases = (
        ("X.509 client, server name matches", SERVER_NAME),
        ("X.509 client, wrong server name", "impostor.demo.test"),
    )
    ok = True
    try:
        rig = DaemonRig()
        # Written before the daemon starts: it reads it once, as at boot (no reload).
        rig.write_config(
            config_text(
                client={"x509.truststore": str(tmp / "ca.pem")}, status_socket=rig.status_socket
            )
        )
        with rig:
            print(
                f"quichsd serve (pid {rig.pid}) joined the handshake-family model; "
                f"an aioquic server listens on {address[0]}:{address[1]}."
            )
            print("The model submits two client requests, as the kernel would; DONE is")
            print("the daemon's answer (status 0, or the errno the kernel consumer sees):")
            for label, name in cases:
                request = rig.client_request(address, "x509", peername=name)
                done = request.handle.wait(15)
                status = errno.errorcode.get(done.status, str(done.status))
                print(f"  {label}: DONE status {done.status} ({status if done.status else 'ok'})")
                ok &= (done.status == 0) == (name == SERVER_NAME)
                rig.finish(request)
            counts = rig.check_invariants()
            print(
                f"  every ACCEPT got exactly one DONE: {counts.accepts} accepts, "
                f"{counts.dones} DONEs"
            )
            rig.wait_for_log(f"request {len(cases)}:", timeout=5)
            print("The daemon's own log (-s; under systemd these go to the journal):")
            for line in rig.log().splitlines():
                print("  " + line)
    finally:
        loop.call_soon_threadsafe(loop.stop)
    return 0 if ok else 1
