# SPDX-License-Identifier: GPL-2.0-only
"""Runs a command inside an approximation of quichsd.service's sandbox, without systemd.

    python tests/unit_sandbox.py --allow FILE --families 1,16 [--mdwe] -- COMMAND...

* ``--allow FILE``: a seccomp allow-list (one system call name a line, as
  ``systemd-analyze syscall-filter`` expands ``SystemCallFilter=``); anything
  else fails with EPERM (``SystemCallErrorNumber=EPERM``).  Needs libseccomp.
* ``--families``: socket(2) may create only these address families; others
  fail with EAFNOSUPPORT (``RestrictAddressFamilies=``).
* ``--mdwe``: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): no writable and
  executable memory (``MemoryDenyWriteExecute=yes``; systemd ≥ 254 uses
  this prctl when the kernel has it, Linux ≥ 6.3).

No new privileges are set (libseccomp's default), then COMMAND is executed.
Capabilities are left to ``setpriv`` (run it before this helper: capset(2) is
in @privileged, which the filter refuses).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
AF_MAX = 46
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _rule(lib: ctypes.CDLL, ctx: int, action: int, nr: int, *cmps: ArgCmp) -> None:
    array = (ArgCmp * len(cmps))(*cmps) if cmps else None
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add({nr}): {os.strerror(-rc)}")


def apply_filter(allowed: list[str], families: set[int]) -> None:
    lib = _libseccomp()
    ctx = lib.seccomp_init(scmp_act_errno(errno.EPERM))
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init")
    socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
    for name in allowed:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0 or nr == socket_nr:
            continue  # unknown here (another architecture's), or handled below
        _rule(lib, ctx, SCMP_ACT_ALLOW, nr)
    if "socket" in allowed:
        for family in range(AF_MAX):
            action = SCMP_ACT_ALLOW if family in families else scmp_act_errno(errno.EAFNOSUPPORT)
            _rule(lib, ctx, action, socket_nr, ArgCmp(0, SCMP_CMP_EQ, family, 0))
        _rule(
            lib,
            ctx,
            scmp_act_errno(errno.EAFNOSUPPORT),
            socket_nr,
            ArgCmp(0, SCMP_CMP_GE, AF_MAX, 0),
        )
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow", required=True)
    parser.add_argument("--families", required=True)
    parser.add_argument("--mdwe", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with open(args.allow) as f:
        allowed = [line.strip() for line in f if line.strip()]
    families = {int(f) for f in args.families.split(",")}
    if args.mdwe:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
    apply_filter(allowed, families)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
