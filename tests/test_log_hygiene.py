# SPDX-License-Identifier: GPL-2.0-only
"""What a sysadmin reads: each handshake's line names the peer's address, names from the
network are escaped in every line and field, stderr lines carry their level (sd-daemon's
``<N>`` when stderr is the journal's stream), ``[debug] loglevel`` follows a reload.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from quichsd.daemon import journal
from quichsd.daemon.handler import run_job
from quichsd.daemon.journal import EscapingFormatter, HandshakeRecord, escape, peer_address
from quichsd.daemon.protocol import Job, Transport
from quichsd.ktls.install import install_ktls
from quichsd.netlink.constants import MessageType
from quichsd.tls import AuthMode, Role
from tests.support.rig import DaemonRig, config_text

#: A peer name that tries to forge a second log line and recolour a terminal.
HOSTILE = "evil\nquichsd[1]: request 99: forged\x1b[31m\x7f\u2028"
HOSTILE_ESCAPED = "evil\\x0aquichsd[1]: request 99: forged\\x1b[31m\\x7f\\u2028"


def test_escape() -> None:
    assert escape(HOSTILE) == HOSTILE_ESCAPED
    assert escape("CN=server.test, O=ä ü") == "CN=server.test, O=ä ü"
    assert escape("tab\there\r") == "tab\\x09here\\x0d"
    assert escape(escape(HOSTILE)) == escape(HOSTILE), "escaping twice changes nothing"


def test_record_escapes_every_name_in_its_line_and_fields() -> None:
    ok = HandshakeRecord(
        1, "quic", "client", 3, HOSTILE, 0, "", 0.01, 51, "h3\n", "CN=a\nb", address="[::1]:4433"
    )
    failed = HandshakeRecord(2, "tcp", "server", 2, None, 13, f"identity {HOSTILE}", 0.01)
    for record in (ok, failed):
        line = record.message()
        assert line.isprintable(), line
        assert all(value.isprintable() for value in record.fields().values())
    assert f"handshake with {HOSTILE_ESCAPED} ([::1]:4433) succeeded" in ok.message()
    assert "ALPN h3\\x0a, peer CN=a\\x0ab, resumed no," in ok.message()
    assert ok.fields()["QUICHSD_PEERNAME"] == HOSTILE_ESCAPED
    assert ok.fields()["QUICHSD_PEER_ADDRESS"] == "[::1]:4433"
    assert failed.fields()["QUICHSD_REASON"] == f"identity {HOSTILE_ESCAPED}"
    assert "QUICHSD_PEER_ADDRESS" not in failed.fields()


def test_formatter_escapes_any_message_but_keeps_a_traceback() -> None:
    record = logging.LogRecord("quichsd", logging.WARNING, "f.py", 1, "peer %s", (HOSTILE,), None)
    assert EscapingFormatter().format(record) == f"peer {HOSTILE_ESCAPED}"
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    text = EscapingFormatter().format(record)
    assert text.startswith(f"peer {HOSTILE_ESCAPED}\nTraceback")


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_peer_address_of_a_connected_socket(family: int, host: str) -> None:
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"no {host} here: {exc}")
    with listener:
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection((host, port)) as client:
            served, _ = listener.accept()
            with served:
                expected = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
                assert peer_address(client.fileno()) == expected
                assert client.fileno() >= 0 and client.getpeername()  # still open
    a, b = socket.socketpair()
    with a, b:
        assert peer_address(a.fileno()) is None
    with socket.socket() as unconnected:
        assert peer_address(unconnected.fileno()) is None
    assert peer_address(10_000) is None


def _stderr_lines(logger: logging.Logger, environ: dict[str, str]) -> list[str]:
    assert journal.configure(logging.INFO, True, environ)[-1] == "stderr"
    stream = io.StringIO()
    handler = logger.handlers[-1]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logger.info("ready")
    logger.warning("peer %s refused", "a\nb")
    return stream.getvalue().splitlines()


def test_stderr_lines_carry_their_level(restore_quichsd_logger: logging.Logger) -> None:
    pid = os.getpid()
    lines = _stderr_lines(restore_quichsd_logger, {})
    assert lines == [
        f"quichsd[{pid}]: info: ready",
        f"quichsd[{pid}]: warning: peer a\\x0ab refused",
    ]


def test_stderr_on_the_journal_stream_gets_sd_daemon_prefixes(
    restore_quichsd_logger: logging.Logger,
) -> None:
    with tempfile.TemporaryFile() as stream:
        saved = os.dup(2)
        try:
            os.dup2(stream.fileno(), 2)
            st = os.fstat(2)
            stream_id = f"{st.st_dev}:{st.st_ino}"
            assert journal.stderr_is_journal({"JOURNAL_STREAM": stream_id})
            assert not journal.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:1"})
            sink = str(Path(tempfile.gettempdir()) / f"quichsd-sink-{os.getpid()}.jsonl")
            env = {"JOURNAL_STREAM": stream_id, journal.SINK_ENV: sink}
            lines = _stderr_lines(restore_quichsd_logger, env)
            Path(sink).unlink(missing_ok=True)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    assert lines == ["<6>ready", "<4>peer a\\x0ab refused"]


def test_a_job_sets_the_workers_log_level(restore_quichsd_logger: logging.Logger) -> None:
    logger = restore_quichsd_logger
    a, b = socket.socketpair()
    with a, b:
        for loglevel, level in ((1, logging.DEBUG), (0, logging.INFO)):
            # A request without an auth mode: refused before any byte is sent.
            job = Job(request_id=1, role=Role.CLIENT, auth_mode=AuthMode.UNSPEC,
                      transport=Transport.TCP, timeout=1.0, loglevel=loglevel)
            outcome = asyncio.run(run_job(job, a, install_ktls=install_ktls))
            assert outcome.status == errno.EINVAL
            assert logger.level == level


def test_daemon_logs_the_peer_address_escapes_the_peer_name_and_reloads_its_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real TCP request on the family model: the peer closes at once, so it fails."""
    sink = tmp_path / "journal.jsonl"
    monkeypatch.setenv(journal.SINK_ENV, str(sink))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with listener, DaemonRig() as rig:
        rig.write_config(config_text(status_socket=rig.status_socket, loglevel=1))
        rig.reload()
        rig.wait_for_log(r"debug: debug records on \(\[debug\] loglevel=1\)")
        with socket.create_connection(("127.0.0.1", port)) as client:
            served, _ = listener.accept()
            served.close()
            handle = rig.submit(
                client.fileno(), MessageType.CLIENTHELLO, "x509", peername=HOSTILE
            )
            assert handle.wait(15).status != 0
        rig.wait_for_log("request 1:")
        assert rig.stop() == 0
        log = rig.log()
    (line,) = [line for line in log.splitlines() if "request 1:" in line]
    assert f"handshake with {HOSTILE_ESCAPED} (127.0.0.1:{port}) failed" in line, line
    assert "warning: request 1: tcp client handshake" in line
    assert "request 99: forged" not in log.replace(HOSTILE_ESCAPED, "")
    records = [json.loads(r) for r in sink.read_text().splitlines()]
    (record,) = [r for r in records if r.get("QUICHSD_REQUEST") == "1"]
    assert record["QUICHSD_PEER_ADDRESS"] == f"127.0.0.1:{port}"
    assert record["QUICHSD_PEERNAME"] == HOSTILE_ESCAPED
    assert HOSTILE_ESCAPED in record["MESSAGE"] and "\n" not in record["MESSAGE"]


def test_no_status_socket_notice_outside_systemd_unless_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default /run/quichsd/status.sock without systemd's RuntimeDirectory=: a debug
    record only; a status_socket the configuration names: its directory is made."""
    from quichsd.daemon.status import StatusServer

    default = tmp_path / "run-quichsd" / "status.sock"  # stands for /run/quichsd, absent
    caplog.set_level(logging.DEBUG, logger="quichsd")

    async def start(path: Path, explicit: bool) -> bool:
        server = await StatusServer.start(path, lambda: {}, explicit=explicit)  # type: ignore
        if server is None:
            return False
        await server.close()
        return True

    assert not asyncio.run(start(default, explicit=False))
    notices = [r for r in caplog.records if "status socket off" in r.getMessage()]
    assert [r.levelno for r in notices] == [logging.DEBUG]
    asked = tmp_path / "asked" / "status.sock"
    assert asyncio.run(start(asked, explicit=True))
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in loud if "status" in r.getMessage()]
