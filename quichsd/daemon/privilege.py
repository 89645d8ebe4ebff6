# SPDX-License-Identifier: GPL-2.0-only
"""A worker gives up its privilege before it reads a peer's byte (docs/ARCHITECTURE.md,
"Process model").

``confine()`` runs once in each fresh worker, after its event loop exists and
before its first job: no core dumps, every capability dropped (bounding,
ambient, inheritable, permitted, effective), no_new_privs, then a seccomp
allow-list.  What the list leaves out kills the worker (SIGSYS): a worker that
tries ``socket()`` or ``socketpair()`` -- the only ways to reach netlink and
ACCEPT or DONE other consumers' requests -- is compromised or broken, and a kill
is loud where an errno could be retried quietly.  Its parent sees the channel
close, answers each of its requests with EIO and forks a replacement; the fork
server reports the signal, which the parent logs.

Calls that are harmless to refuse fail with an errno instead, so Python's and
GnuTLS's fallbacks keep working: opening a file for writing (EACCES; Python then
skips writing bytecode), ``clone3`` (ENOSYS; glibc falls back to ``clone``,
whose flags a filter can read).  An ioctl outside the few that sockets and stdio
use is left out like any other call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import termios
from dataclasses import dataclass

#: Capability numbers (linux/capability.h).
CAP_SETPCAP = 8
CAP_NET_ADMIN = 12

#: What a worker may call.  Names this architecture lacks are skipped.
ALLOWED = (
    # memory, threads, signals, time
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mlock", "munlock",
    "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq", "set_tid_address",
    "sched_yield", "sched_getaffinity", "membarrier",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time",
    "getrandom", "exit", "exit_group",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid",
    "getresgid", "getgroups", "uname", "sysinfo", "getrusage", "capget",
    # the event loop (made before confine(): its self-pipe is a socketpair)
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "poll", "ppoll", "select", "pselect6", "eventfd2", "pipe2",
    # fds: the channel, the request sockets, files read
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "close", "dup", "dup2", "dup3", "fcntl", "lseek",
    "fstat", "stat", "lstat", "newfstatat", "statx", "fstatfs", "statfs",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd",
    # handshake I/O and secrets on the sockets received (QUIC and kTLS setsockopt)
    "sendmsg", "recvmsg", "sendto", "recvfrom", "sendmmsg", "recvmmsg",
    "setsockopt", "getsockopt", "getsockname", "getpeername", "shutdown",
    # PSKs and certificates by keyring serial
    "keyctl", "add_key", "request_key",
)  # fmt: skip

#: ioctl requests admitted (O_NONBLOCK and close-on-exec by ioctl, isatty, bytes queued).
IOCTLS = (termios.FIONBIO, termios.FIOCLEX, termios.FIONCLEX, termios.TCGETS, termios.FIONREAD)
#: open flags that write: such an open fails with EACCES.
WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)


#: A worker's exit code when ``confine()`` failed: it never served, and no replacement
#: would fare better (the daemon stops, daemon/pool.py).
EXIT_UNCONFINED = 3


class ConfineError(OSError):
    """A step of ``confine()`` failed: the worker must not serve."""


@dataclass(frozen=True)
class Confinement:
    """What ``confine()`` did; ``bounding`` is False only when the process could not
    drop its bounding set (no CAP_SETPCAP: an unprivileged daemon, whose bounding set
    no_new_privs and the missing execve() make unreachable anyway)."""

    bounding: bool
    rules: int


def _step(what: str, result: int) -> None:
    if result < 0:
        raise ConfineError(-result, f"{what}: {os.strerror(-result)}")


def keep_only(*capabilities: int) -> bool:
    """Gives up every capability but ``capabilities``, in every set (those not held stay
    not held); whether the bounding set could be reduced too (it needs CAP_SETPCAP, so
    it is done first).  The parent keeps CAP_NET_ADMIN, the fork server CAP_SETPCAP
    (for the workers' own drop), a worker nothing."""
    from quichsd.daemon._privilege import lib

    keep = sum(1 << cap for cap in capabilities)
    bounding = bool(lib.qd_has_effective(CAP_SETPCAP) == 1)
    if bounding:
        _step("PR_CAPBSET_DROP", lib.qd_drop_bounding(keep))
    _step("PR_CAP_AMBIENT_CLEAR_ALL", lib.qd_clear_ambient())
    _step("capset", lib.qd_capset_only(keep))
    return bounding


def confine() -> Confinement:
    """Drops every privilege of this process for good; raises ``ConfineError``."""
    from quichsd.daemon._privilege import ffi, lib

    step = _step
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    step("PR_SET_DUMPABLE", lib.qd_set_undumpable())
    bounding = keep_only()
    step("PR_SET_NO_NEW_PRIVS", lib.qd_set_no_new_privs())

    ctx = lib.seccomp_init(lib.SCMP_ACT_KILL_PROCESS)
    if ctx == ffi.NULL:
        raise ConfineError(errno.ENOSYS, "seccomp_init: libseccomp found no usable seccomp(2)")
    rules = 0

    def rule(name: str, action: int, *conditions: tuple[int, int, int, int]) -> None:
        nonlocal rules
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not on this architecture
        cmp = ffi.new("struct scmp_arg_cmp[]", max(1, len(conditions)))
        for i, (arg, op, a, b) in enumerate(conditions):
            cmp[i].arg, cmp[i].op, cmp[i].datum_a, cmp[i].datum_b = arg, op, a, b
        step(
            f"seccomp rule {name}",
            lib.seccomp_rule_add_array(ctx, action, number, len(conditions), cmp),
        )
        rules += 1

    try:
        allow = lib.SCMP_ACT_ALLOW
        for name in ALLOWED:
            rule(name, allow)
        masked = lib.SCMP_CMP_MASKED_EQ
        write_mask = 0
        for flag in WRITE_FLAGS:
            write_mask |= flag
            rule("openat", lib.qd_act_errno(errno.EACCES), (2, masked, flag, flag))
        rule("openat", allow, (2, masked, write_mask, 0))
        for name in ("mkdir", "mkdirat"):
            rule(name, lib.qd_act_errno(errno.EACCES))
        # threads only: clone() without CLONE_THREAD would be fork()
        rule("clone", allow, (0, masked, lib.CLONE_THREAD, lib.CLONE_THREAD))
        rule("clone3", lib.qd_act_errno(errno.ENOSYS))
        for request in IOCTLS:
            rule("ioctl", allow, (1, lib.SCMP_CMP_EQ, request, 0))
        # getrlimit() by prlimit64 with no new limit
        rule("prlimit64", allow, (2, lib.SCMP_CMP_EQ, 0, 0))
        step("seccomp_load", lib.seccomp_load(ctx))
    finally:
        lib.seccomp_release(ctx)
    return Confinement(bounding=bounding, rules=rules)


def name_process(name: str) -> None:
    """``comm`` (what ps, top and systemd-cgls show) for a process of the daemon."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name[:15])
