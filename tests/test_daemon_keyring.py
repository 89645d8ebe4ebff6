"""Kernel keyring access by direct system calls (this machine's kernel has keyrings)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from quichsd.daemon import keyring


def _unique(name: str) -> str:
    return f"quichsd-test-{os.getpid()}-{name}"


def test_add_read_describe_and_identity() -> None:
    description = _unique("NVMe0R01 hostnqn subsysnqn")
    serial = keyring.add_key(
        "user", description, b"\x01\x02secret", keyring.KEY_SPEC_SESSION_KEYRING
    )
    assert keyring.read_key(serial) == b"\x01\x02secret"
    assert keyring.describe_key(serial) == ("user", description)
    assert keyring.psk_identity(serial) == description.encode()


def test_psk_identity_is_text_after_last_semicolon() -> None:
    serial = keyring.add_key("user", _unique("a;b;ident"), b"k", keyring.KEY_SPEC_SESSION_KEYRING)
    assert keyring.psk_identity(serial) == b"ident"


def test_find_psk_by_identity_returns_serial_and_key() -> None:
    identity = _unique("psk-identity")
    serial = keyring.add_key("user", identity, b"K" * 32, keyring.KEY_SPEC_SESSION_KEYRING)
    assert keyring.find_psk(identity.encode()) == (serial, b"K" * 32)
    assert keyring.find_psk(_unique("nobody").encode()) is None


def test_errors_carry_errno_and_the_key() -> None:
    with pytest.raises(keyring.KeyringError) as info:
        keyring.read_key(0x7FFFFFF0)
    assert info.value.errno in (errno.ENOKEY, errno.EACCES)
    assert "0x7ffffff0" in str(info.value)


def test_link_and_unlink() -> None:
    ring = keyring.add_key("keyring", _unique("ring"), b"", keyring.KEY_SPEC_SESSION_KEYRING)
    member = keyring.add_key("user", _unique("member"), b"v", keyring.KEY_SPEC_SESSION_KEYRING)
    keyring.link_key(member, ring)
    assert keyring.search_key("user", _unique("member"), ring) == member
    keyring.unlink_key(member, ring)
    with pytest.raises(keyring.KeyringError):
        keyring.search_key("user", _unique("member"), ring)


def test_find_keyring_parses_proc_keys(tmp_path: Path) -> None:
    proc = tmp_path / "keys"
    proc.write_text(
        "0671c945 I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: empty\n"
        "1a2b3c4d I------     1 perm 3f030000     0     0 keyring   .nvme: 2\n"
        "0000beef I------     1 perm 3f030000     0     0 user      .nvme: 5\n"
    )
    assert keyring.find_keyring(".nvme", proc) == 0x1A2B3C4D
    assert keyring.find_keyring(".nfs", proc) is None


def test_link_keyrings_reports_each_outcome() -> None:
    outcome = keyring.link_keyrings(("_uid.0", _unique("absent")))
    assert set(keyring.CONSUMER_KEYRINGS) <= set(outcome)
    assert outcome[_unique("absent")] == "not found"
    assert outcome["_uid.0"] == "linked"


def test_request_keyrings_are_counted_and_startup_links_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handshakes in flight share the session keyring: one request ending must not unlink
    a keyring another still uses, nor a keyring linked at start-up."""
    links: list[int] = []
    unlinks: list[int] = []
    monkeypatch.setattr(keyring, "link_key", lambda serial, ring=0: links.append(serial))
    monkeypatch.setattr(keyring, "unlink_key", lambda serial, ring=0: unlinks.append(serial))
    monkeypatch.setattr(keyring, "_linked_at_start", {0x100})
    monkeypatch.setattr(keyring, "_holds", {})
    keyring.hold_keyring(0x200)
    keyring.hold_keyring(0x200)
    keyring.release_keyring(0x200)
    assert (links, unlinks) == ([0x200], [])  # the second request still holds it
    keyring.release_keyring(0x200)
    assert unlinks == [0x200]
    keyring.hold_keyring(0x100)
    keyring.release_keyring(0x100)
    assert links == [0x200] and unlinks == [0x200]  # start-up links are left alone
