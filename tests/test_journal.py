# SPDX-License-Identifier: GPL-2.0-only
"""journald: one structured record per handshake, the handler's fields, the native protocol,
the destinations chosen, and no key material in anything the daemon logs.

Without journald (this machine has none) libsystemd drops what it is sent, so the daemon
test reads the records from QUICHSD_JOURNAL_SINK: the same fields, one JSON object a line.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import importlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from ops_support import psk_pair, statuses, write_pki, x509_config, x509_pair

from quichsd.daemon import journal
from quichsd.daemon.journal import (
    Fields,
    HandshakeRecord,
    configure,
    handler_for,
    journal_handler,
    log_handshake,
)
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig

SUCCESS = HandshakeRecord(
    request_id=7,
    transport="quic",
    role="client",
    auth_mode=3,
    peername="server.test",
    status=0,
    reason="",
    duration=0.0123,
    cipher=51,
    alpn="echo",
    peer="CN=server.test",
    resumed=True,
)
FAILURE = HandshakeRecord(
    request_id=8,
    transport="quic",
    role="server",
    auth_mode=2,
    peername=None,
    status=errno.ETIMEDOUT,
    reason="handshake timed out",
    duration=30.0,
)


def test_success_fields() -> None:
    fields = SUCCESS.fields()
    assert fields == {
        "MESSAGE_ID": journal.MESSAGE_ID_SUCCEEDED,
        "QUICHSD_REQUEST": "7",
        "QUICHSD_TRANSPORT": "quic",
        "QUICHSD_ROLE": "client",
        "QUICHSD_AUTH": "x509",
        "QUICHSD_PEERNAME": "server.test",
        "QUICHSD_PEER": "CN=server.test",
        "QUICHSD_ALPN": "echo",
        "QUICHSD_CIPHER": "TLS_AES_128_GCM_SHA256",
        "QUICHSD_RESUMED": "yes",
        "QUICHSD_STATUS": "0",
        "QUICHSD_DURATION_MS": "12.300",
    }
    assert SUCCESS.level == logging.INFO
    assert SUCCESS.message().startswith(
        "request 7: quic client handshake with server.test succeeded"
    )
    assert ", resumed yes, " in SUCCESS.message()


def test_failure_fields() -> None:
    fields = FAILURE.fields()
    assert fields["MESSAGE_ID"] == journal.MESSAGE_ID_FAILED
    assert fields["QUICHSD_STATUS"] == str(errno.ETIMEDOUT)
    assert fields["QUICHSD_ERRNO"] == "ETIMEDOUT"
    assert fields["QUICHSD_REASON"] == "handshake timed out"
    assert fields["QUICHSD_AUTH"] == "psk"
    assert "QUICHSD_PEERNAME" not in fields and "QUICHSD_CIPHER" not in fields
    assert FAILURE.level == logging.WARNING
    assert "(status 110, ETIMEDOUT)" in FAILURE.message()


@contextlib.contextmanager
def journal_logger(name: str, level: int) -> Iterator[tuple[logging.Logger, list[Fields]]]:
    """A logger at ``level`` whose records go, as journal fields, into the yielded list."""
    sent: list[Fields] = []
    logger = logging.getLogger(name)
    logger.propagate = False
    handler = handler_for(sent.append)
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield logger, sent
    finally:
        logger.removeHandler(handler)


def test_handler_adds_priority_identity_and_the_record_fields() -> None:
    with journal_logger("quichsd.test-journal", logging.DEBUG) as (logger, sent):
        log_handshake(logger, SUCCESS)
        log_handshake(logger, FAILURE)
        logger.error("plain %s", "error")
        logger.debug("detail")
    assert [f["PRIORITY"] for f in sent] == ["6", "4", "3", "7"]
    assert all(f["SYSLOG_IDENTIFIER"] == "quichsd" and f["SYSLOG_FACILITY"] == "4" for f in sent)
    assert sent[0]["MESSAGE"] == SUCCESS.message()
    assert sent[0]["QUICHSD_REQUEST"] == "7" and sent[1]["QUICHSD_ERRNO"] == "ETIMEDOUT"
    assert sent[2]["MESSAGE"] == "plain error" and "QUICHSD_REQUEST" not in sent[2]
    assert sent[0]["CODE_FUNC"] == "log_handshake"


BUILT: list[str] = []


class CountingRecord(HandshakeRecord):
    """Notes in ``BUILT`` each time the text or the fields are built."""

    def message(self) -> str:
        BUILT.append("message")
        return super().message()

    def fields(self) -> journal.Fields:
        BUILT.append("fields")
        return super().fields()


def test_a_disabled_level_builds_neither_text_nor_fields() -> None:
    BUILT.clear()
    with journal_logger("quichsd.test-journal-level", logging.WARNING) as (logger, sent):
        log_handshake(logger, CountingRecord(**asdict(SUCCESS)))  # INFO: below the level
        assert BUILT == [] and sent == []
        log_handshake(logger, CountingRecord(**asdict(FAILURE)))  # WARNING: logged as before
    assert sorted(BUILT) == ["fields", "message"]
    assert len(sent) == 1
    assert sent[0]["MESSAGE"] == FAILURE.message()
    assert sent[0]["QUICHSD_REASON"] == "handshake timed out"


def test_the_handler_is_systemd_pythons(tmp_path: Path) -> None:
    """systemd-python's JournalHandler (libsystemd under journald, the JSON sink in tests);
    a record's process goes into SYSLOG_PID: a worker's, for the records it sent its parent."""
    systemd_journal = importlib.import_module("systemd.journal")  # a dependency: no skip
    sink = tmp_path / "sink.jsonl"
    handler = journal_handler({journal.SINK_ENV: str(sink)})
    assert isinstance(handler, systemd_journal.JournalHandler)
    record = logging.LogRecord("quichsd", logging.INFO, __file__, 9, "from %s", ("w",), None)
    record.process = 4242
    handler.handle(record)
    fields = json.loads(sink.read_text())
    assert (fields["MESSAGE"], fields["SYSLOG_PID"], fields["PRIORITY"]) == ("from w", "4242", "6")
    assert all(key.isupper() for key in fields)  # the record's other attributes are left out


def test_destinations(restore_quichsd_logger: logging.Logger, tmp_path: Path) -> None:
    sink = str(tmp_path / "sink.jsonl")
    assert configure(logging.INFO, True, {journal.SINK_ENV: sink}) == ["journal", "stderr"]
    assert configure(logging.INFO, False, {journal.SINK_ENV: sink}) == ["journal"]
    assert configure(logging.INFO, False, {"JOURNAL_STREAM": "8:1234"}) == ["journal"]
    expected = ["syslog"] if journal.SYSLOG_SOCKET.exists() else ["stderr"]
    if not journal.JOURNAL_SOCKET.exists():
        assert configure(logging.INFO, False, {}) == expected
    # Earlier handlers of ours are replaced, not stacked.
    ours = [h for h in logging.getLogger("quichsd").handlers if getattr(h, "_quichsd_handler", 0)]
    assert len(ours) == len(configure(logging.DEBUG, True, {}))


def _secret_forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
    ]


def test_daemon_records_one_per_handshake_and_no_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = write_pki(tmp_path)
    sink = tmp_path / "journal.jsonl"
    monkeypatch.setenv(journal.SINK_ENV, str(sink))
    psk = os.urandom(32)
    with DaemonRig(x509_config(pki)) as rig, ModelQuicListener(alpn=["echo"]) as quic:
        pairs = [x509_pair(rig, quic), psk_pair(rig, quic, psk)]
        assert statuses(*pairs[0], *pairs[1]) == [0, 0, 0, 0], rig.log()
        failed = rig.client_request(quic.address, "psk")  # no identity: refused, ENOKEY
        assert statuses(failed) == [errno.ENOKEY]
        rig.check_invariants()
        assert rig.stop() == 0
        stderr_log = rig.log().encode()
    raw = sink.read_bytes()
    records = [json.loads(line) for line in raw.splitlines()]
    handshakes = [r for r in records if "QUICHSD_REQUEST" in r]
    assert sorted(int(r["QUICHSD_REQUEST"]) for r in handshakes) == [1, 2, 3, 4, 5]
    by_key = {(r["QUICHSD_AUTH"], r["QUICHSD_ROLE"], r["QUICHSD_STATUS"]): r for r in handshakes}
    assert set(by_key) == {
        ("x509", "client", "0"),
        ("x509", "server", "0"),
        ("psk", "client", "0"),
        ("psk", "server", "0"),
        ("psk", "client", str(errno.ENOKEY)),
    }
    x509_client = by_key[("x509", "client", "0")]
    assert x509_client["QUICHSD_TRANSPORT"] == "quic"
    assert x509_client["QUICHSD_PEERNAME"] == "server.test"
    assert x509_client["QUICHSD_PEER"] == "CN=server.test"
    assert x509_client["QUICHSD_ALPN"] == "echo"
    assert x509_client["QUICHSD_CIPHER"].startswith("TLS_")
    assert x509_client["PRIORITY"] == "6"
    assert float(x509_client["QUICHSD_DURATION_MS"]) > 0
    assert by_key[("psk", "server", "0")]["QUICHSD_PEER"].startswith("psk:quichsd-ops-")
    refused = by_key[("psk", "client", str(errno.ENOKEY))]
    assert (refused["QUICHSD_ERRNO"], refused["PRIORITY"]) == ("ENOKEY", "4")
    # Key material: the PSK, the server's private key (PEM body, DER, the scalar).
    key = pki.server.key
    private_der = pki.server.key_pem.split(b"-----")[2].replace(b"\n", b"")
    forms = [*_secret_forms(psk), private_der, *_secret_forms(base64.b64decode(private_der))]
    private_value = getattr(key, "private_numbers", None)
    if private_value is not None:
        scalar = private_value().private_value.to_bytes(32, "big")
        forms += _secret_forms(scalar)
    for form in forms:
        assert form not in raw, "key material in a journal record"
        assert form not in stderr_log, "key material on stderr"
