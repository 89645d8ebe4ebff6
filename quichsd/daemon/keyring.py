"""Kernel keyrings by direct system calls (add_key, request_key, keyctl) via ctypes.

Why not a binding: the maintained Python one (``keyutils``) needs
libkeyutils-dev and a compiler at install time for the six operations we use;
the system calls are stable ABI and take a few lines.  Syscall numbers are
x86_64's and aarch64's (the architectures Debian's kernel floor runs on).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
from collections.abc import Iterator
from pathlib import Path

KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4

_KEYCTL_DESCRIBE = 6
_KEYCTL_LINK = 8
_KEYCTL_UNLINK = 9
_KEYCTL_SEARCH = 10
_KEYCTL_READ = 11

_SYSCALLS = {
    # machine: (add_key, request_key, keyctl)
    "x86_64": (248, 249, 250),
    "aarch64": (217, 218, 219),
}

#: Keyrings kernel consumers keep their material in; always linked, as tlshd does.
CONSUMER_KEYRINGS = (".nvme", ".nfs", ".nfsd")


class KeyringError(OSError):
    """A key operation failed; the message names the key and the operation."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _numbers() -> tuple[int, int, int]:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine]
    except KeyError:
        raise KeyringError(errno.ENOSYS, f"keyring syscalls unknown on {machine}") from None


def _call(what: str, number: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise KeyringError(err, f"{what}: {os.strerror(err)}")
    return result


def _keyctl(what: str, op: int, *args: object) -> int:
    return _call(what, _numbers()[2], ctypes.c_long(op), *args)


def read_key(serial: int) -> bytes:
    """The payload of key ``serial`` (a DER certificate, a private key, a PSK)."""
    what = f"reading key {serial:#x}"
    size = _keyctl(what, _KEYCTL_READ, ctypes.c_long(serial), None, ctypes.c_long(0))
    while True:
        buf = ctypes.create_string_buffer(max(size, 1))
        got = _keyctl(what, _KEYCTL_READ, ctypes.c_long(serial), buf, ctypes.c_long(size))
        if got <= size:
            return buf.raw[:got]
        size = got  # the key grew between the two calls


def describe_key(serial: int) -> tuple[str, str]:
    """(type, description) of key ``serial``."""
    what = f"describing key {serial:#x}"
    size = _keyctl(what, _KEYCTL_DESCRIBE, ctypes.c_long(serial), None, ctypes.c_long(0))
    buf = ctypes.create_string_buffer(size)
    _keyctl(what, _KEYCTL_DESCRIBE, ctypes.c_long(serial), buf, ctypes.c_long(size))
    fields = buf.value.decode(errors="replace").split(";", 4)
    if len(fields) != 5:
        raise KeyringError(errno.EINVAL, f"{what}: unexpected description {buf.value!r}")
    return fields[0], fields[4]


def psk_identity(serial: int) -> bytes:
    """A PSK's TLS identity: its description after the last ';' (tlshd's rule)."""
    _type, description = describe_key(serial)
    return description.rsplit(";", 1)[-1].encode()


def search_key(key_type: str, description: str, keyring: int = KEY_SPEC_SESSION_KEYRING) -> int:
    what = f"searching {key_type} key {description!r}"
    return _keyctl(
        what,
        _KEYCTL_SEARCH,
        ctypes.c_long(keyring),
        key_type.encode(),
        description.encode(),
        ctypes.c_long(0),
    )


def add_key(key_type: str, description: str, payload: bytes, keyring: int) -> int:
    what = f"adding {key_type} key {description!r}"
    return _call(
        what,
        _numbers()[0],
        key_type.encode(),
        description.encode(),
        payload,
        ctypes.c_size_t(len(payload)),
        ctypes.c_long(keyring),
    )


def link_key(serial: int, keyring: int = KEY_SPEC_SESSION_KEYRING) -> None:
    _keyctl(f"linking key {serial:#x}", _KEYCTL_LINK, ctypes.c_long(serial), ctypes.c_long(keyring))


def unlink_key(serial: int, keyring: int = KEY_SPEC_SESSION_KEYRING) -> None:
    _keyctl(
        f"unlinking key {serial:#x}", _KEYCTL_UNLINK, ctypes.c_long(serial), ctypes.c_long(keyring)
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
            _linked_at_start.add(serial)
            outcome[name] = "linked"
        except KeyringError as exc:
            outcome[name] = f"not linked: {exc.strerror}"
    return outcome


#: Keyrings link_keyrings() linked at start-up: they stay linked (see hold_keyring).
_linked_at_start: set[int] = set()
#: How many requests of this process hold each other keyring linked.
_holds: dict[int, int] = {}


def hold_keyring(serial: int) -> None:
    """Links a request's keyring into the session keyring for its handshake.

    The session keyring is shared by every handshake in flight (workers are forked with it)
    and a link is not counted: unlinking when one request ends took the keyring from under
    the others (a PSK search or key read failing with ENOKEY) and removed the start-up link
    for good (seen on the real kernel: the agent's session keyring was empty after the
    first NVMe connect; tlshd 1.4.0 links and unlinks the same way, and in bench/vm.py failed
    2 of ~700 PSK handshakes with "failed to search 'psk' key").  So keyrings linked at
    start-up are left alone, and any other is unlinked when the last request of this
    process holding it ends (workers still share the session keyring: two workers holding
    the same non-start-up keyring can still take it from each other).
    """
    if serial in _linked_at_start:
        return
    if not _holds.get(serial):
        link_key(serial)
    _holds[serial] = _holds.get(serial, 0) + 1


def release_keyring(serial: int) -> None:
    """Ends a request's ``hold_keyring``."""
    if serial in _linked_at_start or serial not in _holds:
        return
    _holds[serial] -= 1
    if _holds[serial] <= 0:
        del _holds[serial]
        unlink_key(serial)


@contextlib.contextmanager
def held_keyring(serial: int | None) -> Iterator[None]:
    """``hold_keyring`` for the duration of one request (nothing when ``serial`` is empty)."""
    if serial:
        hold_keyring(serial)
    try:
        yield
    finally:
        if serial:
            with contextlib.suppress(KeyringError):
                release_keyring(serial)


def find_psk(identity: bytes) -> tuple[int, bytes] | None:
    """Server PSK lookup: (serial, key) of a ``psk`` key, else a ``user`` key, by identity."""
    text = identity.decode(errors="replace")
    for key_type in ("psk", "user"):
        try:
            serial = search_key(key_type, text)
            return serial, read_key(serial)
        except KeyringError as exc:
            if exc.errno not in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED, errno.ENODEV):
                raise
    return None
