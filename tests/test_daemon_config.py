# SPDX-License-Identifier: GPL-2.0-only
"""tlshd's configuration format, read by quichsd: every key, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from quichsd.daemon.config import ConfigError, DaemonConfig, load_config, parse_config

TLSHD_EXAMPLE = """
# a file tlshd 1.4.0 accepts
[debug]
loglevel=1
tls=4
nl=2
delay_done=0

[authenticate]
keyrings=.mykeys;other;

[authenticate.client]
x509.truststore=/etc/pki/ca.pem
x509.crl=/etc/pki/crl.pem
x509.certificate=/etc/pki/client.pem
x509.private_key=/etc/pki/client.key
x509.pq.certificate=/etc/pki/pq.pem
x509.pq.private_key=pkcs11:token=x

[authenticate.server]
x509.certificate= /etc/pki/server.pem
x509.private_key=/etc/pki/server.key

[quichsd]
workers=4
worker_recycle=500
handshake_timeout=12.5
shutdown_grace=3
status_socket=/run/q/s.sock
"""


def test_every_tlshd_key_and_ours_is_read() -> None:
    config = parse_config(TLSHD_EXAMPLE, "example")
    assert (config.loglevel, config.tls_debug, config.netlink_debug) == (1, 4, 2)
    assert config.keyrings == (".mykeys", "other")
    assert config.client.truststore == Path("/etc/pki/ca.pem")
    assert config.client.crl == Path("/etc/pki/crl.pem")
    assert config.client.certificate == Path("/etc/pki/client.pem")
    assert config.client.private_key == "/etc/pki/client.key"
    assert config.client.pq_certificate == Path("/etc/pki/pq.pem")
    assert config.client.pq_private_key == "pkcs11:token=x"
    assert config.server.certificate == Path("/etc/pki/server.pem")
    assert config.server.truststore is None
    assert (config.workers, config.worker_recycle) == (4, 500)
    assert (config.handshake_timeout, config.shutdown_grace) == (12.5, 3.0)
    assert config.status_socket == Path("/run/q/s.sock")
    assert config.warnings == ()


def test_empty_file_gives_defaults() -> None:
    assert parse_config("", "empty") == DaemonConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[debug]\nloglevel=high\n", "example:2: [debug] loglevel: 'high' is not an integer"),
        ("[debug]\nloglevel=-1\n", "example:2: [debug] loglevel: must not be negative"),
        ("loglevel=1\n", "example:1: key 'loglevel' comes before any [section]"),
        ("[debug]\nnonsense line\n", "example:2: expected 'key=value'"),
        ("[quichsd]\nhandshake_timeout=0\n", "positive number of seconds"),
        ("[quichsd]\nshutdown_grace=soon\n", "'soon' is not a number of seconds"),
        ("[authenticate.client]\nx509.certificate=\n", "example:2: [authenticate.client] "),
        ("[debug]\nloglevel=1\\q\n", "example:2: [debug] loglevel: '1\\\\q' is not an integer"),
        (
            "[authenticate.client]\nx509.crl=/a\\q\n",
            "example:2: [authenticate.client] x509.crl: invalid escape sequence '\\q'",
        ),
        ("[authenticate]\nkeyrings=a\\\n", "example:2: [authenticate] keyrings: escape character"),
        (b"[authenticate.client]\nx509.crl=\xff\n", "x509.crl: value is not valid UTF-8"),
        ("[debug]\ntls=1\n[Debug]\n[a\tb]\n", "example:4: invalid section name 'a\\tb'"),
        ("[debug]\nk]=1\n", "example:2: invalid key name 'k]'"),
        ("[debug]\nEncoding=latin1\n", "example:2: unsupported encoding 'latin1'"),
    ],
)
def test_bad_files_name_file_line_and_key(text: str | bytes, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "example")
    assert message in str(info.value)


def test_unknown_keys_are_warnings_not_errors() -> None:
    config = parse_config("[debug]\nloglevel=2\n[future]\nshiny=1\n", "f")
    assert config.loglevel == 2
    assert config.warnings == ("f:4: unknown key [future] shiny ignored",)


def test_escapes_and_comments() -> None:
    config = parse_config("# c\n[authenticate.client]\nx509.certificate=/a\\sb\n", "f")
    assert config.client.certificate == Path("/a b")


def test_read_as_glib_reads_it() -> None:
    """The cases where our old reader and GLib (so tlshd) disagreed."""
    text = (
        "[authenticate]\nkeyrings=a\\;b;c; d ;;\n"
        "[debug]\ntls=1\n"
        "[authenticate.client]\nx509.certificate=/etc/pki/c.pem  \n"
        "[debug]\ntls=2\n"
    )
    config = parse_config(text, "f")
    assert config.keyrings == ("a;b", "c", " d ")  # GLib's items, verbatim; empty names dropped
    assert config.tls_debug == 2  # a key set again: the last value wins
    assert config.client.certificate == Path("/etc/pki/c.pem  ")  # GLib keeps trailing spaces
    assert config.warnings == ("f:8: [debug] tls set again (line 4): the last value wins",)


def test_bytes_that_are_not_utf8_outside_values(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"# caf\xe9 latin-1 comment\n[debug]\nloglevel=2\n[x\xff]\nk=1\n")
    config = load_config(path)
    assert config.loglevel == 2
    assert config.warnings == (f"{path}:5: unknown key [x\udcff] k ignored",)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent")


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("[debug]\nloglevel=3\n")
    config = load_config(path)
    assert config.loglevel == 3
    assert config.path == path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[quichsd]\nhandshake_timeout=inf", "[quichsd] handshake_timeout: inf is not a number"),
        ("[quichsd]\nhandshake_timeout=1e999", "handshake_timeout: 1e999 is not a number"),
        ("[quichsd]\nhandshake_timeout=nan", "handshake_timeout: must be a positive number"),
        ("[quichsd]\nhandshake_timeout=3601", "up to 3600"),
        ("[quichsd]\nshutdown_grace=inf", "[quichsd] shutdown_grace: inf is not a number"),
        ("[quichsd]\nshutdown_grace=-1", "shutdown_grace: must be a positive number"),
        ("[quichsd]\nworkers=100000", "[quichsd] workers: 100000 is outside 0..128"),
        ("[quichsd]\nworker_recycle=0", "worker_recycle: 0 is outside 1..1000000000"),
        ("[debug]\ntls=100", "[debug] tls: 100 is outside 0..99"),
        ("[debug]\ndelay_done=99999999999999999999", "delay_done: 99999999999999999999 is outside"),
        ("[quichsd]\nstatus_socket=/run/a\0b", "[quichsd] status_socket: contains a NUL byte"),
        ("[quichsd]\nstatus_socket=/run/" + "s" * 120, "a UNIX socket path holds at most 107"),
        ("[quichsd]\nstatus_socket=/run/quichsd/", "names a directory"),
        ("[authenticate.server]\nx509.certificate=/a\0b", "x509.certificate: contains a NUL"),
        ("[authenticate.client]\nx509.truststore=/" + "d" * 300, "longer than 255 bytes"),
        ("[authenticate.client]\nx509.crl=" + "/d" * 2100, "longer than a path may be"),
        ("[authenticate]\nkeyrings=a;b\0c", "[authenticate] keyrings: contains a NUL byte"),
    ],
)
def test_values_that_switch_a_bound_off_are_refused(line: str, message: str) -> None:
    """Each numeric key has a finite range and each path is one the kernel can take: a
    value outside is refused with its file and line (issue 11, item 3)."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"# first line\n{line}\n", "quichsd.conf")
    assert str(info.value).startswith("quichsd.conf:3: "), info.value
    assert message in str(info.value)


def test_range_edges_are_accepted() -> None:
    config = parse_config(
        "[quichsd]\nworkers=128\nworker_recycle=1\nhandshake_timeout=3600\n"
        "shutdown_grace=600\nstatus_socket=/" + "s" * 106 + "\n[debug]\ntls=99\n",
        "edges",
    )
    assert (config.workers, config.worker_recycle, config.tls_debug) == (128, 1, 99)
    assert (config.handshake_timeout, config.shutdown_grace) == (3600.0, 600.0)
    url = "pkcs11:token=t;object=" + "o" * 300  # a key URL: no path names to bound
    config = parse_config(f"[authenticate.server]\nx509.private_key={url}\n", "url")
    assert config.server.private_key == url
