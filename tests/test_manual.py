# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd handshake``: the CLI pairs a user runs, as separate processes on the model.

Each test starts ``quichsd handshake server ... --userspace`` and the client
against it (floor 2: the userspace model of the kernel QUIC socket on UDP
127.0.0.1), and checks what each prints and its exit status.  The point of
most of them: both ends of a pair reach the same verdict.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from quichsd.api import load_psk_file

TIMEOUT = 30
QUICHSD = [sys.executable, "-m", "quichsd.cli", "handshake"]


@dataclass
class Ended:
    status: int
    out: str
    err: str

    @property
    def verdict(self) -> str:
        found = re.search(r"handshake (OK|FAILED)", self.out)
        assert found, (self.out, self.err)
        return found.group(1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("pki")
    done = subprocess.run(
        [*QUICHSD, "pki", str(where)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    return where


@contextmanager
def server(*args: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A ``handshake server --userspace`` on a free port: (port, process)."""
    proc = subprocess.Popen(
        [*QUICHSD, "server", "127.0.0.1", "0", "--userspace", "--timeout", "20", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.match(r"listening on 127\.0\.0\.1:(\d+) \(userspace\)", first)
        assert found, (first, proc.stderr.read() if proc.stderr else "")
        yield int(found.group(1)), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def finish(proc: subprocess.Popen[str]) -> Ended:
    out, err = proc.communicate(timeout=TIMEOUT)
    return Ended(proc.returncode, out, err)


def client(port: int, *args: str) -> Ended:
    done = subprocess.run(
        [*QUICHSD, "client", "127.0.0.1", str(port), "--userspace", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return Ended(done.returncode, done.stdout, done.stderr)


def _certs(pki: Path, who: str) -> list[str]:
    return ["--cert", str(pki / f"{who}.pem"), "--key", str(pki / f"{who}.key")]


def _trust(pki: Path) -> list[str]:
    return ["--ca", str(pki / "ca.pem"), "--peer-name", "localhost"]


# -- the README's example -----------------------------------------------------------------


def test_message_example_from_the_readme(pki: Path) -> None:
    with server(*_certs(pki, "server"), "--alpn", "h3", "--message", "") as (port, proc):
        c = client(port, *_trust(pki), "--alpn", "h3", "--message", "hello")
        s = finish(proc)
    assert (c.status, s.status) == (0, 0), (c, s)
    assert "client handshake OK: QUIC v1, TLS 1.3" in c.out and "ALPN h3" in c.out
    assert "peer CN=localhost" in c.out
    assert "server handshake OK" in s.out
    assert "received: hello" in s.out
    assert "reply: hello" in c.out


# -- both ends reach the same verdict --------------------------------------------------------

PAIRS = {
    # name: (server options, client options, expected verdict)
    "x509": ([], [], "OK"),
    "mutual-request": (["--request-cert", "request", "--ca", "ca"], ["client-cert"], "OK"),
    "mutual-require": (["--request-cert", "require", "--ca", "ca"], ["client-cert"], "OK"),
    "request-without-cert": (["--request-cert", "request", "--ca", "ca"], [], "OK"),
    "require-without-cert": (["--request-cert", "require", "--ca", "ca"], [], "FAILED"),
    "hello-retry": (["--groups", "SECP384R1"], ["--groups", "SECP256R1,SECP384R1"], "OK"),
}


def _expand(options: list[str], pki: Path) -> list[str]:
    out: list[str] = []
    for option in options:
        if option == "ca":
            out.append(str(pki / "ca.pem"))
        elif option == "client-cert":
            out += _certs(pki, "client")
        else:
            out.append(option)
    return out


@pytest.mark.parametrize("name", list(PAIRS))
def test_both_ends_reach_the_same_verdict(name: str, pki: Path) -> None:
    server_options, client_options, expected = PAIRS[name]
    with server(*_certs(pki, "server"), "--alpn", "smb", *_expand(server_options, pki)) as (
        port,
        proc,
    ):
        c = client(port, *_trust(pki), "--alpn", "smb", *_expand(client_options, pki))
        s = finish(proc)
    assert (s.verdict, c.verdict) == (expected, expected), (s, c)
    assert (s.status == 0, c.status == 0) == (expected == "OK",) * 2
    if name.startswith("mutual"):
        assert "peer CN=client" in s.out
    if name == "request-without-cert":
        assert "peer -" in s.out


def test_required_certificate_missing_fails_clearly_on_both_ends(pki: Path) -> None:
    with server(
        *_certs(pki, "server"), "--request-cert", "require", "--ca", str(pki / "ca.pem")
    ) as (
        port,
        proc,
    ):
        c = client(port, *_trust(pki))
        s = finish(proc)
    assert (
        "server handshake FAILED: the client sent no certificate and this server requires one "
        "(errno 13, EACCES)"
    ) in s.out
    assert "server handshake: " not in s.out  # said once, not twice
    assert "TLS alert certificate_required (116)" in c.out, c
    assert "(errno 13, EACCES)" in c.out


def test_psk_pair(tmp_path: Path) -> None:
    psk = tmp_path / "psk.txt"
    psk.write_text("# test key\nnvme-host:" + "ab" * 32 + "\n")
    with server("--psk-file", str(psk), "--alpn", "smb") as (port, proc):
        c = client(port, "--psk-file", str(psk), "--alpn", "smb")
        s = finish(proc)
    assert (s.verdict, c.verdict) == ("OK", "OK"), (s, c)
    assert "peer PSK nvme-host" in s.out


def test_request_cert_needs_a_trust_store(pki: Path) -> None:
    done = subprocess.run(
        [
            *QUICHSD,
            "server",
            "127.0.0.1",
            "0",
            "--userspace",
            *_certs(pki, "server"),
            "--request-cert",
            "require",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2
    assert "--request-cert require needs --ca" in done.stderr


# -- resumption and 0-RTT --------------------------------------------------------------------


def test_ticket_out_then_resume_with_early_data(pki: Path, tmp_path: Path) -> None:
    ticket = tmp_path / "ticket.json"
    with server(*_certs(pki, "server"), "--alpn", "h3", "--count", "2", "--message", "") as (
        port,
        proc,
    ):
        first = client(port, *_trust(pki), "--alpn", "h3", "--ticket-out", str(ticket))
        second = client(
            port, *_trust(pki), "--alpn", "h3", "--ticket-in", str(ticket), "--early-data", "0rtt"
        )
        s = finish(proc)
    assert first.status == 0, first
    assert "resumed no, 0-RTT no" in first.out
    assert f"session ticket saved to {ticket}" in first.out
    assert stat.S_IMODE(ticket.stat().st_mode) == 0o600
    assert second.status == 0, second
    assert "resumed yes, 0-RTT accepted" in second.out
    assert "reply: 0rtt" in second.out
    server_lines = [line for line in s.out.splitlines() if "handshake OK" in line]
    assert len(server_lines) == 2, s
    assert "resumed yes, 0-RTT accepted" in server_lines[1]
    assert "received: 0rtt" in s.out


def test_early_data_needs_a_ticket(pki: Path) -> None:
    done = client(1, *_trust(pki), "--early-data", "x")
    assert done.status == 2
    assert "--early-data needs --ticket-in" in done.err


# -- messages a user reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("nvme:not-hex-at-all\n", "psk.txt:1: the key is not hex"),
        ("# comment\n\nnvme-no-colon\n", "psk.txt:3: expected 'identity:hexkey'"),
        (":abcd\n", "psk.txt:1: the identity before ':' is empty"),
        ("nvme:\n", "psk.txt:1: the key after ':' is empty"),
        ("# only a comment\n", "psk.txt: no 'identity:hexkey' line"),
    ],
)
def test_bad_psk_file_is_named_with_its_line(content: str, said: str, tmp_path: Path) -> None:
    path = tmp_path / "psk.txt"
    path.write_text(content)
    with pytest.raises(ValueError) as caught:
        load_psk_file(path)
    assert str(caught.value).startswith(f"{tmp_path}/{said}"), caught.value
    assert "fromhex" not in str(caught.value) and "non-hexadecimal" not in str(caught.value)


def test_bad_psk_file_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "psk.txt"
    path.write_text("nvme:zz\n")
    done = client(1, "--psk-file", str(path))
    assert done.status == 1
    assert (
        done.err.strip() == f"quichsd: client handshake not started: {path}:1: the key is not hex"
    )


@pytest.mark.parametrize("option", ["--psk-file", "--ca", "--cert", "--ticket-in"])
def test_missing_file_names_its_option(option: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    extra = ["--key", str(missing)] if option == "--cert" else []
    done = client(1, option, str(missing), *extra)
    assert done.status == 2
    assert done.err.strip() == f"quichsd: {option} {missing}: No such file or directory"


def test_pki_writes_a_usable_throwaway_pki(pki: Path) -> None:
    names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in pki.iterdir()}
    assert names == {
        "ca.pem": 0o644,
        "server.pem": 0o644,
        "server.key": 0o600,
        "client.pem": 0o644,
        "client.key": 0o600,
    }


@pytest.mark.skipif(
    os.path.exists("/sys/module/quic"), reason="this machine has the QUIC module loaded"
)
def test_kernel_socket_without_the_module_says_so_in_one_line() -> None:
    done = subprocess.run(
        [*QUICHSD, "client", "127.0.0.1", "4433"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("quichsd: the kernel has no QUIC module")
