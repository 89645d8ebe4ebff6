# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd serve``: tlshd's job, in the foreground, with tlshd's options.

Start-up order follows tlshd (docs/tlshd-compat.md §STARTUP) with two deliberate
differences: a kernel without the handshake family is an error (exit 1, not
tlshd's 0, so systemd shows the failure), and the optional DONE attributes
are probed by reading the kernel's answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from quichsd import __version__
from quichsd.daemon import journal, keyring, privilege
from quichsd.daemon.config import MAX_WORKERS, ConfigError, DaemonConfig, load_config
from quichsd.daemon.forkserver import ForkServer
from quichsd.daemon.metrics import Snapshot
from quichsd.daemon.metrics_snapshot import snapshot
from quichsd.daemon.notify import Lifecycle, Notifier, status_line
from quichsd.daemon.service import HandshakeService
from quichsd.daemon.status import DEFAULT_SOCKET, StatusServer
from quichsd.daemon.wiring import KERNEL, Wiring
from quichsd.netlink import FamilyUnavailable
from quichsd.netlink import trace as netlink_trace
from quichsd.tls import debuglog, gnutls_version

log = logging.getLogger("quichsd")

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_NO_FAMILY = 1
#: The workers could not drop their privileges (daemon/privilege.py): nothing is served.
EXIT_UNCONFINED = 1


@dataclass(frozen=True)
class ServeOptions:
    config: Path | None = None
    stderr: bool = False


def setup_logging(config: DaemonConfig, to_stderr: bool) -> None:
    """journald (structured) under systemd, else syslog; stderr too with ``-s``."""
    journal.configure(journal.level_for(config.loglevel), to_stderr)


def apply_debug(config: DaemonConfig) -> None:
    """``[debug] tls`` and ``nl``, as tlshd applies them at start and on reload."""
    netlink_trace.set_level(config.netlink_debug)
    used = debuglog.set_gnutls_debug(config.tls_debug)
    if used != config.tls_debug:
        log.warning(
            "[debug] tls=%d: GnuTLS logs key material from level %d; using %d",
            config.tls_debug,
            debuglog.MAX_LEVEL + 1,
            used,
        )


def default_workers(config: DaemonConfig) -> int:
    """The most workers at once (the pool starts with one, daemon/pool.py): the configured
    count, else one per CPU (at least 2, at most ``MAX_WORKERS``: the
    unit's LimitNOFILE= is sized for that many, systemd/quichsd.service)."""
    return config.workers or min(MAX_WORKERS, max(2, os.cpu_count() or 2))


def raise_open_files_limit() -> tuple[int, int]:
    """RLIMIT_NOFILE's soft limit up to the hard one; (before, after).

    The parent holds one fd per request in flight (up to workers x 64) and the
    kernel fails an ACCEPT with EMFILE when none is free, completing that request
    with EIO; systemd's default soft limit (1024) is below the pool's maximum.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def serve(options: ServeOptions, wiring: Wiring = KERNEL) -> int:
    """``quichsd serve``; ``wiring``: what it runs against (daemon/wiring.py)."""
    try:
        config = load_config(options.config)
    except ConfigError as exc:
        print(f"quichsd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # First, while this process holds nothing a worker must not have: no journal or syslog
    # socket, no netlink socket, no event loop (daemon/forkserver.py).  Whatever every
    # worker must share the fork server makes itself: it imports what workers need and
    # makes the 0-RTT anti-replay store when first asked for a worker, after this process
    # has joined the group, so nothing of a worker's delays the join or READY=1
    # (docs/startup.md).
    forkserver = ForkServer.start(wiring, setup=_share_with_workers)
    try:
        # The parent needs only CAP_NET_ADMIN (the handshake family's ACCEPT and DONE);
        # CAP_SETPCAP, in the unit's bounding set for the workers, goes now.
        privilege.keep_only(privilege.CAP_NET_ADMIN)
    except privilege.ConfineError as exc:
        print(f"quichsd: cannot drop privileges: {exc.strerror}", file=sys.stderr)
        forkserver.close()
        return EXIT_UNCONFINED
    try:
        return _serve(options, config, forkserver, wiring)
    finally:
        forkserver.close()


def _serve(
    options: ServeOptions,
    config: DaemonConfig,
    forkserver: ForkServer,
    wiring: Wiring,
) -> int:
    setup_logging(config, options.stderr)
    log.info("quichsd %s on GnuTLS %s", __version__, gnutls_version())
    before, after = raise_open_files_limit()
    log.debug("open files limit: %d (was %d)", after, before)
    for warning in config.warnings:
        log.warning("%s", warning)
    apply_debug(config)
    for name, outcome in keyring.link_keyrings(config.keyrings).items():
        log.debug("keyring %s: %s", name, outcome)
    try:
        family = wiring.open_family()
    except FamilyUnavailable:
        log.error("the kernel has no handshake netlink family (net/handshake): nothing to serve")
        print(
            "quichsd: kernel handshake service is not available "
            "(needs Linux >= 6.5 with net/handshake)",
            file=sys.stderr,
        )
        return EXIT_NO_FAMILY
    with family:
        capabilities = family.probe_optional_attributes()
        log.info("kernel DONE attributes: remote-auth %s", capabilities.remote_peerids)
        service = HandshakeService(
            family,
            config,
            workers=default_workers(config),
            report_remote_auth=capabilities.remote_peerids,
            transport_probe=wiring.transport_of,
            forkserver=forkserver,
            fork_per_request=wiring.fork_per_request,
        )
        asyncio.run(_run(service, options))
    if service.failure is not None:
        print(f"quichsd: {service.failure}", file=sys.stderr)
        return EXIT_UNCONFINED
    log.info("shutting down")
    return EXIT_OK


def _share_with_workers() -> None:
    """What the fork server makes, after its imports, for every worker it forks."""
    from quichsd.quic.driver import share_anti_replay

    # One 0-RTT anti-replay store for the whole daemon (docs/ARCHITECTURE.md): its shared
    # mapping and its lock's fd reach every worker, replacements included.
    share_anti_replay()


async def _run(service: HandshakeService, options: ServeOptions) -> None:
    loop = asyncio.get_running_loop()
    # systemd: READY=1 once serving, STATUS=/WATCHDOG=1 while serving, STOPPING=1.
    lifecycle = Lifecycle(Notifier(), lambda: status_line(service))
    service.on_started.append(lifecycle.ready)
    service.on_stopping.append(lifecycle.stopping)

    def reload() -> None:
        lifecycle.reloading()
        path = service.config.path or options.config
        log.info("reloading configuration from %s", path or "the default locations")
        try:
            config = load_config(path)
        except ConfigError as exc:
            log.error("reload failed, keeping the old configuration: %s", exc)
            lifecycle.reloaded("reload failed, previous configuration kept")
            return
        # The parent's level now; workers forked from here on inherit it.
        journal.set_level(journal.level_for(config.loglevel))
        log.debug("debug records on ([debug] loglevel=%d)", config.loglevel)
        apply_debug(config)
        service.reload(config)
        log.info("configuration reloaded")
        lifecycle.reloaded()

    for sig in (signal.SIGHUP, signal.SIGUSR1):
        loop.add_signal_handler(sig, reload)
    status_path = service.config.status_socket
    status_server = await StatusServer.start(
        status_path, lambda: _snapshot(service), explicit=status_path != DEFAULT_SOCKET
    )
    try:
        await service.run()
    finally:
        await lifecycle.close()
        if status_server is not None:
            await status_server.close()


def _snapshot(service: HandshakeService) -> Snapshot:
    return snapshot(service, versions={"quichsd": __version__, "gnutls": gnutls_version()})
