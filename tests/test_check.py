# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check``: every check's ✓ and ✗ (and !) paths, the table, and the exit status.

The kernel-facing checks run against fakes (``Environment``): this machine has no
handshake family and no QUIC module, and the checks must be right where they do.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

import quichsd.check as check_command
import quichsd.check.host as check
from quichsd.check import Check, Environment, exit_status, render, run_checks
from quichsd.check.x509 import describe_chain
from quichsd.cli import main as cli_main
from quichsd.netlink import FamilyUnavailable
from quichsd.tls.selfsigned import Issued, issue, make_ca, new_key
from quichsd.tls.verify import credentials_trusting, verify_chain

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class FakeFamily:
    groups: dict[str, int] = field(default_factory=lambda: {"none": 1, "tlshd": 2})
    family_id: int = 0x1A
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def _unavailable() -> FakeFamily:
    raise FamilyUnavailable("handshake", 2)


@dataclass(frozen=True)
class Pki:
    ca: Issued
    other_ca: Issued
    server: Issued
    dir: Path

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = make_ca("check CA")
    return Pki(
        ca, make_ca("nobody's CA"), issue(ca, ("server.test",)), tmp_path_factory.mktemp("pki")
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    """A machine where everything is in place (QUIC and kTLS faked present)."""
    status = tmp_path / "status"
    status.write_text("Name:\tquichsd\nCapEff:\t000001ffffffffff\n")
    keys = tmp_path / "keys"
    keys.write_text(
        "1d2c3b4a I------     1 perm 1f0b0000     0     0 keyring   .nvme: empty\n"
        "0671c945 I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: 1\n"
    )
    tls_stat = tmp_path / "tls_stat"
    tls_stat.write_text("TlsCurrTxSw 0\n")
    monkeypatch.setattr(check, "_quic_available", lambda: (True, "IPPROTO_QUIC sockets available"))
    return Environment(
        open_family=FakeFamily,
        proc_status=status,
        proc_keys=keys,
        tls_stat=tls_stat,
        system_trust=(),
        now=lambda: NOW,
    )


def config_file(directory: Path, body: str) -> Path:
    path = directory / "config"
    path.write_text(body)
    return path


def good_config(pki: Pki, directory: Path, **server: str) -> Path:
    chain = pki.write("chain.pem", pki.server.cert_pem + pki.ca.cert_pem)
    key = pki.write("key.pem", pki.server.key_pem)
    ca = pki.write("ca.pem", pki.ca.cert_pem)
    values = {
        "x509.truststore": str(ca),
        "x509.certificate": str(chain),
        "x509.private_key": str(key),
        **server,
    }
    lines = "\n".join(f"{k}={v}" for k, v in values.items() if v)
    return config_file(
        directory,
        f"[authenticate.client]\nx509.truststore={ca}\n[authenticate.server]\n{lines}\n",
    )


def by_name(checks: list[Check]) -> dict[str, Check]:
    out: dict[str, Check] = {}
    for c in checks:
        out.setdefault(c.name, c)
    return out


def states(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.state for c in checks}


def test_everything_in_place(
    pki: Pki, env: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quichsd.tls import binding

    monkeypatch.setattr(binding, "psk_binder_hash_supported", lambda: True)  # GnuTLS >= 3.8.11
    checks = run_checks(good_config(pki, tmp_path), env)
    assert all(c.state == "ok" for c in checks), render(checks)
    assert exit_status(checks) == 0
    names = [c.name for c in checks]
    assert names[:5] == [
        "handshake netlink family",
        "CAP_NET_ADMIN",
        "QUIC (IPPROTO_QUIC)",
        "kTLS (TLS over TCP)",
        "GnuTLS",
    ]
    assert names[5] == "SHA-384 PSKs"
    found = by_name(checks)
    assert found["handshake netlink family"].detail == "present (id 0x1a, group tlshd)"
    assert ".nvme 0x1d2c3b4a" in found["keyrings"].detail
    assert ".nfs not loaded" in found["keyrings"].detail
    assert found["server certificate"].detail.startswith("CN=server.test, valid until")
    assert found["server chain"].detail == "chains to CN=check CA"
    assert found["client trust store"].detail.endswith("1 certificate")
    text = render(checks)
    assert "✓  server private key" in text and "0 failed, 0 warnings" in text
    assert "✗" not in text


def test_cli_exit_status(
    pki: Pki,
    env: Environment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(check_command, "Environment", lambda: env)
    assert cli_main(["check", "-c", str(good_config(pki, tmp_path))]) == 0
    assert "0 failed" in capsys.readouterr().out
    env.open_family = _unavailable
    assert cli_main(["check", "-c", str(good_config(pki, tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "✗  handshake netlink family" in out
    assert "fix: boot Linux >= 6.5 built with CONFIG_NET_HANDSHAKE" in out


# -- kernel ----------------------------------------------------------------------------------


def test_no_family_and_no_group(env: Environment) -> None:
    env.open_family = _unavailable
    assert check.check_family(env).state == "fail"
    env.open_family = lambda: FakeFamily(groups={"none": 1})
    result = check.check_family(env)
    assert result.state == "fail" and "tlshd" in result.detail


def test_cap_net_admin(env: Environment) -> None:
    env.proc_status.write_text("CapEff:\t0000000000000000\n")
    result = check.check_cap_net_admin(env)
    assert result.state == "fail" and "run as root" in result.fix
    env.proc_status.write_text("CapEff:\t0000000000001000\n")  # CAP_NET_ADMIN alone is enough
    assert check.check_cap_net_admin(env).state == "ok"
    env.proc_status = env.proc_status.with_name("missing")
    assert check.check_cap_net_admin(env).state == "fail"


@pytest.mark.parametrize(
    ("quic", "ktls", "served", "expected"),
    [
        (True, True, {"quic"}, ("ok", "ok")),
        (False, True, {"quic"}, ("fail", "ok")),  # nothing quichsd serves works
        (True, False, {"quic"}, ("ok", "warn")),  # kTLS is not ours to serve (yet)
        (False, True, {"quic", "tcp"}, ("warn", "ok")),  # TCP requests still work
        (False, False, {"quic", "tcp"}, ("fail", "fail")),
    ],
)
def test_transports(
    env: Environment,
    monkeypatch: pytest.MonkeyPatch,
    quic: bool,
    ktls: bool,
    served: set[str],
    expected: tuple[str, str],
) -> None:
    monkeypatch.setattr(check, "_quic_available", lambda: (quic, "quic probe"))
    monkeypatch.setattr(check, "_ktls_available", lambda _path: (ktls, "ktls probe"))
    monkeypatch.setattr(check, "served_transports", lambda: frozenset(served))
    results = check.check_transports(env)
    assert tuple(r.state for r in results) == expected
    assert all(r.fix for r in results if r.state != "ok")


def test_real_probes_answer() -> None:
    """On this machine, whatever it has: each probe answers without raising."""
    for ok, detail in (check._quic_available(), check._ktls_available(Path("/proc/net/tls_stat"))):
        assert isinstance(ok, bool) and detail
    assert "quic" in check.served_transports()


def test_gnutls(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check.check_gnutls().state == "ok"
    from quichsd.tls import binding

    monkeypatch.setattr(binding, "gnutls_version", lambda: "3.6.16")
    result = check.check_gnutls()
    assert result.state == "fail" and "older than 3.7.2" in result.detail


def test_psk_binders_warn_only_on_old_gnutls(monkeypatch: pytest.MonkeyPatch) -> None:
    from quichsd.tls import binding

    for supported, state in ((True, "ok"), (False, "warn")):
        monkeypatch.setattr(binding, "psk_binder_hash_supported", lambda s=supported: s)
        result = check.check_psk_binders()
        assert result.state == state
        assert bool(result.fix) == (not supported)
    assert "NVMe0R02" in result.detail and "3.8.11" in result.fix


def test_keyrings(env: Environment, tmp_path: Path) -> None:
    config = check_command.check_config(
        config_file(tmp_path, "[authenticate]\nkeyrings=mine;.nvme\n")
    )[1]
    results = check.check_keyrings(env, config)
    assert states(results) == {"keyrings": "ok", "keyring mine": "warn", "keyring .nvme": "ok"}
    env.proc_keys = tmp_path / "no-keys"
    result = check.check_keyrings(env, config)[0]
    assert result.state == "fail" and "CONFIG_KEYS" in result.fix


# -- configuration ------------------------------------------------------------------------------


def test_bad_configuration(env: Environment, tmp_path: Path) -> None:
    path = config_file(tmp_path, "[quichsd]\nworkers=many\n")
    checks = run_checks(path, env)
    result = by_name(checks)["configuration"]
    assert result.state == "fail" and f"{path}:2: [quichsd] workers" in result.detail
    assert exit_status(checks) == 1
    assert not any(c.name.startswith(("client", "server")) for c in checks)


def test_unknown_key_is_a_warning(env: Environment, tmp_path: Path) -> None:
    checks = run_checks(config_file(tmp_path, "[debug]\nloglevl=1\n"), env)
    assert [c.state for c in checks if c.name == "configuration"] == ["ok", "warn"]
    assert exit_status(checks) == 0


def test_missing_configuration(env: Environment, tmp_path: Path) -> None:
    result = by_name(run_checks(tmp_path / "absent", env))["configuration"]
    assert result.state == "fail" and "no such configuration file" in result.detail


# -- certificates -----------------------------------------------------------------------------


def _server_checks(pki: Pki, env: Environment, tmp_path: Path, **server: str) -> dict[str, Check]:
    return {
        c.name: c
        for c in run_checks(good_config(pki, tmp_path, **server), env)
        if c.name.startswith("server")
    }


FailureCase = Callable[[Pki], dict[str, str]]
CASES: dict[str, tuple[FailureCase, str, str, str]] = {
    # name: (server settings, check that fails, expected state, words in the detail)
    "expired": (
        lambda p: {
            "x509.certificate": str(
                p.write("old.pem", (old := issue(p.ca, ("server.test",), expired=True)).cert_pem)
            ),
            "x509.private_key": str(p.write("old-key.pem", old.key_pem)),
        },
        "server certificate",
        "fail",
        "expired on",
    ),
    "expiring soon": (
        lambda p: {
            "x509.certificate": str(
                p.write("soon.pem", (soon := issue(p.ca, ("s",), valid_days=5)).cert_pem)
            ),
            "x509.private_key": str(p.write("soon-key.pem", soon.key_pem)),
        },
        "server certificate",
        "warn",
        "valid until",
    ),
    "key of another certificate": (
        lambda p: {"x509.private_key": str(p.write("other-key.pem", issue(p.ca).key_pem))},
        "server private key",
        "fail",
        "does not belong to CN=server.test",
    ),
    "unreadable certificate": (
        lambda p: {"x509.certificate": str(p.dir / "absent.pem")},
        "server certificate",
        "fail",
        "No such file",
    ),
    "unreadable key": (
        lambda p: {"x509.private_key": str(p.dir / "absent-key.pem")},
        "server private key",
        "fail",
        "No such file",
    ),
    "garbage key": (
        lambda p: {"x509.private_key": str(p.write("garbage-key.pem", b"-----BEGIN nonsense"))},
        "server private key",
        "fail",
        "not an unencrypted private key",
    ),
    "issued by an untrusted CA": (
        lambda p: {
            "x509.certificate": str(
                p.write(
                    "stranger.pem",
                    (stranger := issue(p.other_ca, ("server.test",))).cert_pem
                    + p.other_ca.cert_pem,
                )
            ),
            "x509.private_key": str(p.write("stranger-key.pem", stranger.key_pem)),
        },
        "server chain",
        "fail",
        "a root nobody here trusts",
    ),
    "garbage trust store": (
        lambda p: {"x509.truststore": str(p.write("junk-ca.pem", b"not a certificate"))},
        "server trust store",
        "fail",
        "not PEM/DER certificates",
    ),
    "certificate without key": (
        lambda p: {"x509.private_key": ""},
        "server certificate",
        "fail",
        "x509.private_key is not set",
    ),
    "key in a token": (
        lambda p: {"x509.private_key": "pkcs11:token=tls;object=server"},
        "server private key",
        "warn",
        "pkcs11: URL not checked here",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_certificate_problems(pki: Pki, env: Environment, tmp_path: Path, case: str) -> None:
    settings, name, state, words = CASES[case]
    results = _server_checks(pki, env, tmp_path, **settings(pki))
    assert results[name].state == state, results
    assert words in results[name].detail
    if state == "fail":
        assert results[name].fix
    others = [c for n, c in results.items() if n != name and c.state != "ok"]
    # One problem, one complaint (an expired leaf does not also break its chain, etc.);
    # a garbage server trust store does not break the server's own chain either: its CA
    # is in the client section's trust store, which counts (peers check our chain).
    assert not others, others


def test_not_yet_valid(pki: Pki, env: Environment, tmp_path: Path) -> None:
    env.now = lambda: NOW - datetime.timedelta(days=2)
    result = _server_checks(pki, env, tmp_path)["server certificate"]
    assert result.state == "fail" and "is not valid before" in result.detail


def test_system_store_counts_as_trust(pki: Pki, env: Environment, tmp_path: Path) -> None:
    env.system_trust = (pki.write("system.pem", pki.other_ca.cert_pem + pki.ca.cert_pem),)
    results = _server_checks(pki, env, tmp_path, **{"x509.truststore": ""})
    assert results["server chain"].state == "ok"


def _intermediate(root: Issued) -> Issued:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "check intermediate")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    from quichsd.tls.selfsigned import _pem

    return _pem(cert, key)


def test_chain_through_an_intermediate(pki: Pki) -> None:
    middle = _intermediate(pki.ca)
    leaf = issue(middle, ("server.test",))
    trust = credentials_trusting([pki.ca.cert_pem])
    verdict = verify_chain(leaf.cert_pem + middle.cert_pem, trust)
    assert describe_chain(verdict, NOW) == (True, "chains to CN=check CA")
    ok, why = describe_chain(verify_chain(leaf.cert_pem, trust), NOW)
    assert not ok and "no issuer found for CN=server.test" in why
    ok, why = describe_chain(verdict, NOW + datetime.timedelta(days=60))
    assert not ok and why == "intermediate CN=check intermediate is not valid now"
    # At the real time GnuTLS, checking the periods itself, trusts it too.
    assert verify_chain(leaf.cert_pem + middle.cert_pem, trust, check_time=True).trusted


def test_render_marks_and_fixes() -> None:
    checks = [
        Check("a", "ok", "fine"),
        Check("bb", "warn", "careful", "do this"),
        Check("c", "fail", "broken", "do that"),
    ]
    text = render(checks)
    assert text.splitlines() == [
        "  ✓  a   fine",
        "  !  bb  careful",
        "         fix: do this",
        "  ✗  c   broken",
        "         fix: do that",
        "",
        "1 failed, 1 warnings, 1 ok",
    ]
    assert "XX  c" in render(checks, unicode=False)
    assert exit_status(checks) == 1 and exit_status(checks[:2]) == 0
