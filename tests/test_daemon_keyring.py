# SPDX-License-Identifier: GPL-2.0-only
"""Kernel keyring access by direct system calls (this machine's kernel has keyrings)."""

from __future__ import annotations

import errno
import os
import struct
import threading
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


def _thread_keyring() -> set[int]:
    """Serials linked into the calling thread's keyring (none: it does not exist yet)."""
    try:
        data = keyring.read_key(keyring.KEY_SPEC_THREAD_KEYRING)
    except keyring.KeyringError as exc:
        if exc.errno == errno.ENOKEY:
            return set()
        raise
    return set(struct.unpack(f"={len(data) // 4}i", data))


def test_a_request_keyring_is_linked_only_in_its_block_and_its_thread() -> None:
    """What makes a request's keys its own (the daemon's side is in test_daemon_faults):
    the keyring is linked into the calling thread's keyring for the block only, never
    into the session keyring every worker shares."""
    identity = _unique("request-psk")
    ring = keyring.add_key("keyring", _unique("consumer"), b"", keyring.KEY_SPEC_SESSION_KEYRING)
    key = keyring.add_key("user", identity, b"P" * 32, ring)
    try:
        assert ring not in _thread_keyring()
        with keyring.possessing(ring):
            assert ring in _thread_keyring()
            assert keyring.find_psk(identity.encode(), ring) == (key, b"P" * 32)
            elsewhere: list[set[int]] = []
            thread = threading.Thread(target=lambda: elsewhere.append(_thread_keyring()))
            thread.start()
            thread.join()
            assert ring not in elsewhere[0]
        assert ring not in _thread_keyring()
    finally:
        keyring.unlink_key(ring, keyring.KEY_SPEC_SESSION_KEYRING)


def test_a_keyring_that_cannot_be_linked_is_not_an_error() -> None:
    with keyring.possessing(0x7FFFFFF0):  # no such key: as tlshd, go on without it
        assert keyring.find_psk(_unique("nobody").encode()) is None


def test_serials_from_netlink_are_taken_as_the_kernels_signed_ids() -> None:
    assert keyring._serial(0xFFFFFFFD) == keyring.KEY_SPEC_SESSION_KEYRING
    assert keyring._serial(0x2F6B3A11) == 0x2F6B3A11
