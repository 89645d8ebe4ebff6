# SPDX-License-Identifier: GPL-2.0-only
"""sd_notify: the Notifier on its own, the Lifecycle's timing, and the real daemon under a
NOTIFY_SOCKET of ours (READY=1 after the group join, STATUS=, WATCHDOG=1, RELOADING=1,
STOPPING=1)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import NotifyListener, statuses, write_pki, x509_config, x509_pair

from quichsd.daemon.notify import Lifecycle, Notifier
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig

WAIT = 15.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify = NotifyListener(str(tmp_path / "notify.sock"))
    yield notify
    notify.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready("x") is False
    assert notifier.sent == []


def test_every_notice_through_systemd_python(
    tmp_path: Path, listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    notifier = Notifier()
    assert notifier.ready("serving")
    assert notifier.status("3 in flight")
    assert notifier.watchdog()
    assert notifier.reloading()
    assert notifier.stopping("bye")
    listener.wait_for(lambda n: n.text.startswith("STOPPING=1"))
    texts = [n.text for n in listener.snapshot()]
    assert texts[:3] == ["READY=1\nSTATUS=serving", "STATUS=3 in flight", "WATCHDOG=1"]
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", texts[3])
    assert texts[4] == "STOPPING=1\nSTATUS=bye"


def test_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"quichsd-test-{secrets.token_hex(6)}"
    notify = NotifyListener(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().ready()
        assert notify.wait_for(lambda n: True).text == "READY=1"
    finally:
        notify.close()


def test_unreachable_socket_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert Notifier().ready() is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval == interval


def test_lifecycle_status_on_change_and_no_watchdog_unasked(
    tmp_path: Path, listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    counts = iter(["0 done", "0 done", "1 done", "1 done", "2 done"] + ["2 done"] * 100)

    async def run() -> None:
        lifecycle = Lifecycle(
            Notifier(),
            lambda: next(counts),
            status_interval=0.02,
        )
        lifecycle.ready()
        lifecycle.ready()  # once only
        await asyncio.sleep(0.3)
        lifecycle.stopping()
        lifecycle.stopping()
        await lifecycle.close()

    asyncio.run(run())
    listener.wait_for(lambda n: n.text.startswith("STOPPING=1"))
    texts = [n.text for n in listener.snapshot()]
    assert texts == [
        "READY=1\nSTATUS=serving: 0 done",
        "STATUS=serving: 1 done",
        "STATUS=serving: 2 done",
        "STOPPING=1\nSTATUS=stopping: 2 done",
    ]


def test_daemon_under_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY=1 after the join, the first worker after it; STATUS= with counts; WATCHDOG=1 every
    WatchdogSec/2; RELOADING=1 then READY=1 on SIGHUP; STOPPING=1 on SIGTERM."""
    pki = write_pki(tmp_path)
    rig = DaemonRig(x509_config(pki))
    notify = NotifyListener(
        str(tmp_path / "notify.sock"),
        context=lambda: (len(rig.family.listeners()), len(rig.worker_pids())),
    )
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: a ping every 0.1 s
    try:
        with rig:
            ready = notify.wait_for(lambda n: "READY=1" in n.text)
            assert notify.snapshot()[0] is ready, "READY=1 comes first"
            joined, _workers = ready.context  # type: ignore[misc]
            assert joined == 1, "READY=1 before the daemon joined the tlshd group"
            # READY=1 does not wait for the first worker (docs/startup.md): it follows.
            assert ready.fields["STATUS"] == "serving: 0 in flight, 0 done, 0 failed; 0 workers"
            rig.wait_workers(1)

            first = notify.wait_for(lambda n: n.text == "WATCHDOG=1")
            fourth = notify.wait_for(
                lambda n: sum(m.text == "WATCHDOG=1" for m in notify.snapshot()) >= 4
            )
            assert fourth.at - first.at < 1.0

            with ModelQuicListener(alpn=["echo"]) as quic:
                assert statuses(*x509_pair(rig, quic)) == [0, 0], rig.log()
            notify.wait_for(
                lambda n: n.fields.get("STATUS", "").endswith("2 done, 0 failed; 1 worker")
            )

            seen = len(notify.snapshot())
            rig.reload()
            reloading = notify.wait_for(lambda n: n.text.startswith("RELOADING=1"))
            assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading.text)
            again = notify.wait_for(lambda n: n.text.startswith("READY=1") and n.at > reloading.at)
            assert again.fields["STATUS"].startswith("serving:")
            assert notify.snapshot().index(reloading) >= seen

            os.kill(rig.pid, signal.SIGTERM)
            stopping = notify.wait_for(lambda n: n.text.startswith("STOPPING=1"))
            assert stopping.fields["STATUS"].startswith("stopping:")
            assert rig.wait_exit() == 0
            rig.check_invariants()
    finally:
        notify.close()
