# SPDX-License-Identifier: GPL-2.0-only
"""The configuration reader: tlshd's key file plus our ``[quichsd]`` section.

Expected: ``ConfigError`` (file:line and why), the reader's one documented error;
bytes that are not UTF-8 are refused before parsing, as ``load_config`` does.
Seeds: ``etc/tlshd-config.example`` and the configurations of the config tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from fuzz.harness import Target
from quichsd.daemon.config import ConfigError, DaemonConfig, parse_config

EXPECTED = (ConfigError,)
_EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "tlshd-config.example"


def one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        config = parse_config(text, "fuzz.conf")
    except EXPECTED as exc:
        assert str(exc).startswith("fuzz.conf"), f"error without its file: {exc}"
        return
    assert isinstance(config, DaemonConfig)
    assert config.workers >= 0 and config.worker_recycle >= 0
    assert config.handshake_timeout > 0 and config.shutdown_grace > 0
    assert not math.isnan(config.handshake_timeout) and not math.isnan(config.shutdown_grace)


def _seeds() -> Iterator[bytes]:
    yield _EXAMPLE.read_bytes()
    yield (
        b"[debug]\nloglevel=1\ntls=0\nnl=0\n\n[authenticate]\nkeyrings=.nvme;.nfs\n\n"
        b"[authenticate.client]\nx509.truststore=/etc/pki/ca.pem\n"
        b"x509.certificate=/etc/pki/client.pem\nx509.private_key=pkcs11:token=a;object=b\n\n"
        b"[authenticate.server]\nx509.certificate=/etc/pki/server.pem\n"
        b"x509.private_key=/etc/pki/server.key\n\n"
        b"[quichsd]\nworkers=4\nworker_recycle=100\nhandshake_timeout=2.5\n"
        b"shutdown_grace=1\nstatus_socket=/run/quichsd/status.sock\n"
    )
    yield b"[quichsd]\nhandshake_timeout = 1e3\n# comment\n[unknown]\nkey=\\s\\t\\n\\\\\n"


TARGETS = (
    Target(
        name="config",
        one_input=one_input,
        expected=EXPECTED,
        seeds=_seeds,
    ),
)
