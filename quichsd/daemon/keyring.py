# SPDX-License-Identifier: GPL-2.0-only
"""Kernel keyrings: add_key(2) and keyctl(2) through the cffi module.

The calls are small C wrappers in ``quichsd.tls._gnutls`` (built at install,
``tls/_build.py``): the system headers supply the syscall numbers and keyctl
operations, so nothing here depends on the architecture and no libkeyutils
is needed.  Errors carry the operation and the key.

A request's keys are reachable only from that request's handshake
(``possessing``): the kernel names the consumer's keyring in ACCEPT, and the
worker links it into its *thread* keyring for the few synchronous steps that
read or search keys, never into the session keyring every worker shares
(docs/ARCHITECTURE.md, "Keys").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from quichsd.tls._gnutls import ffi, lib

log = logging.getLogger(__name__)

KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4

#: Keyrings kernel consumers keep their material in; always linked, as tlshd does.
CONSUMER_KEYRINGS = (".nvme", ".nfs", ".nfsd")


class KeyringError(OSError):
    """A key operation failed; the message names the key and the operation."""


def _serial(value: int) -> int:
    """A serial as the kernel's signed 32-bit key_serial_t (netlink sends it unsigned)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _check(what: str, result: int) -> int:
    if result < 0:
        err = ffi.errno
        raise KeyringError(err, f"{what}: {os.strerror(err)}")
    return int(result)


def read_key(serial: int) -> bytes:
    """The payload of key ``serial`` (a DER certificate, a private key, a PSK)."""
    what = f"reading key {serial:#x}"
    size = _check(what, lib.qd_keyctl_read(_serial(serial), ffi.NULL, 0))
    while True:
        buf = ffi.new("char[]", max(size, 1))
        got = _check(what, lib.qd_keyctl_read(_serial(serial), buf, size))
        if got <= size:
            return bytes(ffi.buffer(buf, got))
        size = got  # the key grew between the two calls


def describe_key(serial: int) -> tuple[str, str]:
    """(type, description) of key ``serial``."""
    what = f"describing key {serial:#x}"
    size = _check(what, lib.qd_keyctl_describe(_serial(serial), ffi.NULL, 0))
    buf = ffi.new("char[]", max(size, 1))
    _check(what, lib.qd_keyctl_describe(_serial(serial), buf, size))
    text = ffi.string(buf)
    fields = text.decode(errors="replace").split(";", 4)
    if len(fields) != 5:
        raise KeyringError(errno.EINVAL, f"{what}: unexpected description {text!r}")
    return fields[0], fields[4]


def psk_identity(serial: int) -> bytes:
    """A PSK's TLS identity: its description after the last ';' (tlshd's rule)."""
    _type, description = describe_key(serial)
    return description.rsplit(";", 1)[-1].encode()


def search_key(key_type: str, description: str, keyring: int = KEY_SPEC_SESSION_KEYRING) -> int:
    what = f"searching {key_type} key {description!r}"
    return _check(
        what,
        lib.qd_keyctl_search(_serial(keyring), key_type.encode(), description.encode(), 0),
    )


def add_key(key_type: str, description: str, payload: bytes, keyring: int) -> int:
    what = f"adding {key_type} key {description!r}"
    return _check(
        what,
        lib.qd_add_key(
            key_type.encode(), description.encode(), payload, len(payload), _serial(keyring)
        ),
    )


def link_key(serial: int, keyring: int = KEY_SPEC_SESSION_KEYRING) -> None:
    _check(f"linking key {serial:#x}", lib.qd_keyctl_link(_serial(serial), _serial(keyring)))


def unlink_key(serial: int, keyring: int = KEY_SPEC_SESSION_KEYRING) -> None:
    _check(f"unlinking key {serial:#x}", lib.qd_keyctl_unlink(_serial(serial), _serial(keyring)))


def set_permissions(serial: int, permissions: int) -> None:
    """KEYCTL_SETPERM (possessor, user, group, other: one byte each, high to low)."""
    _check(
        f"setting permissions of key {serial:#x}",
        lib.qd_keyctl_setperm(_serial(serial), permissions),
    )


def find_keyring(name: str, proc_keys: Path = Path("/proc/keys")) -> int | None:
    """The serial of the keyring called ``name``, from /proc/keys (what we may view)."""
    try:
        lines = proc_keys.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(None, 8)
        if len(parts) == 9 and parts[7] == "keyring":
            description = parts[8].split(":", 1)[0]
            if description == name:
                return int(parts[0], 16)
    return None


def link_keyrings(names: tuple[str, ...]) -> dict[str, str]:
    """Links the consumer keyrings and ``names`` into our session keyring.

    Returns name → outcome ("linked", or why not) for the log; a keyring that
    does not exist yet is normal (its consumer module is not loaded).
    """
    outcome: dict[str, str] = {}
    for name in dict.fromkeys((*CONSUMER_KEYRINGS, *names)):
        serial = find_keyring(name)
        if serial is None:
            outcome[name] = "not found"
            continue
        try:
            link_key(serial)
            outcome[name] = "linked"
        except KeyringError as exc:
            outcome[name] = f"not linked: {exc.strerror}"
    return outcome


@contextlib.contextmanager
def possessing(serial: int | None) -> Iterator[None]:
    """Possess the request keyring ``serial`` (the keys in it readable) for this block only.

    Links it into the calling thread's keyring, which no other process sees, and
    unlinks it on leaving.  A worker runs all its handshakes on one thread, so the
    block must not await: no other request's code can run while it lasts, and no
    other request -- in this worker or another -- can reach the keyring's keys.
    (tlshd links the keyring into its session keyring; here that keyring is shared
    by every worker, and by every handshake they run.)  Nothing when ``serial`` is
    empty.
    """
    if not serial:
        yield
        return
    try:
        link_key(serial, KEY_SPEC_THREAD_KEYRING)
    except KeyringError as exc:
        # As tlshd: go on; keys reachable from the start-up links may still do.
        log.debug("request keyring not linked: %s", exc)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(KeyringError):
            unlink_key(serial, KEY_SPEC_THREAD_KEYRING)


def find_psk(identity: bytes, keyring: int | None = None) -> tuple[int, bytes] | None:
    """Server PSK lookup: (serial, key) of a ``psk`` key, else a ``user`` key, by identity.

    Searched in the request's ``keyring`` (call inside ``possessing(keyring)``), then
    in the session keyring (the keyrings linked at start-up).
    """
    text = identity.decode(errors="replace")
    places = (keyring, KEY_SPEC_SESSION_KEYRING) if keyring else (KEY_SPEC_SESSION_KEYRING,)
    for key_type in ("psk", "user"):
        for place in places:
            try:
                serial = search_key(key_type, text, place)
                return serial, read_key(serial)
            except KeyringError as exc:
                if exc.errno not in _NOT_THERE:
                    raise
    return None


#: Search outcomes that mean "not here" (an expired, revoked or foreign key is not a hit).
_NOT_THERE = frozenset({errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED, errno.ENODEV})
