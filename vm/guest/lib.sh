# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=sh
# Helpers for scripts that vm/run runs inside the guest. Source it: . "$VM_ROOT/vm/guest/lib.sh"
# POSIX sh (the host's dash or busybox ash). Output conventions read by tests/vm/rig.py:
#   "@@ KEY VALUE..."   a fact (last one wins), e.g. "@@ sha_equal 1"
#   "== NAME (+S s)"    a step and the guest seconds since the previous step

: "${VM_ROOT:?not in a vm/run guest}"
SID=/run/sid/root          # the sid chroot, made writable with an overlay by sid_up

_vm_last=
vm_uptime() { read -r _u _ < /proc/uptime; echo "$_u"; }
# vm_step NAME: prints NAME and the time the previous step took.
vm_step() {
    _now=$(vm_uptime)
    if [ -n "$_vm_last" ]; then
        echo "== $* (prev step $(awk "BEGIN{printf \"%.2f\", $_now - $_vm_last}") s, t=$_now)"
    else
        echo "== $* (t=$_now)"
    fi
    _vm_last=$_now
}
fact() { echo "@@ $*"; }
die() { echo "FAIL: $*" >&2; fact failed "$*"; exit 1; }

# sid_up: overlay (tmpfs upper) over the read-only sid chroot from the cache, with /proc, /sys,
# /dev, /tmp of the guest and VM_WORK at the same path inside; the checkout too (read-only, at
# its own path), with quichsd's sid venv (vm/sid-venv: SID_VENV, its path in the chroot) and
# that venv's extension modules overlaid on quichsd/tls, as vm/chroot-run does on the host.
# Idempotent.
SID_VENV=$("$VM_ROOT/vm/sid-venv" path)
sid_up() {
    [ -n "$VM_CHROOT" ] || die "no sid chroot in the cache (vm/fetch without --no-chroot)"
    mountpoint -q "$SID" && return 0
    mkdir -p /run/sid/upper /run/sid/work "$SID"
    modprobe overlay || die "modprobe overlay"
    mount -t overlay sid -o "lowerdir=$VM_CHROOT,upperdir=/run/sid/upper,workdir=/run/sid/work" \
        "$SID" || die "overlay over $VM_CHROOT"
    mount -t proc proc "$SID/proc"
    mount --rbind /sys "$SID/sys"
    mount --rbind /dev "$SID/dev"
    mount --rbind /tmp "$SID/tmp"
    mount -t tmpfs -o mode=0755 tmpfs "$SID/run"
    mkdir -p "$SID/run/lock" "$SID$VM_WORK" "$SID$VM_ROOT"
    mountpoint -q "$SID$VM_ROOT" || mount --rbind "$VM_ROOT" "$SID$VM_ROOT"
    mount --bind "$VM_WORK" "$SID$VM_WORK"
    # under systemd as PID 1 mounts are shared: keep the overlay below out of the host view
    mount --make-rprivate "$SID"
    if [ -e "$SID$SID_VENV/.complete" ]; then
        mount -t overlay quichsd-ext \
            -o "lowerdir=$SID$SID_VENV/ext/quichsd/tls:$VM_ROOT/quichsd/tls" \
            "$SID$VM_ROOT/quichsd/tls" || die "overlay of $SID_VENV/ext on quichsd/tls"
    fi
}

# sid CMD...: runs CMD in the sid chroot with a clean environment (PATH with the venv's bin
# last, PYTHONPATH the checkout, for quichsd from the sid venv).
sid() {
    chroot "$SID" /usr/bin/env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin:$SID_VENV/bin" \
        HOME=/root LANG=C.UTF-8 PYTHONPATH="$VM_ROOT" "$@"
}
# sid_exec CMD...: the same, replacing the current (sub)shell, so that after
# `( sid_exec tlshd ) &` $! is the daemon's own pid (a backgrounded `sid` would leave the
# daemon as a child of a subshell, out of reach of `kill $!`).
sid_exec() {
    exec chroot "$SID" /usr/bin/env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin:$SID_VENV/bin" \
        HOME=/root LANG=C.UTF-8 PYTHONPATH="$VM_ROOT" "$@"
}

# The tlshd multicast group's bit in /proc/net/netlink's Groups column, then wait until a
# NETLINK_GENERIC socket has joined it: the kernel refuses handshake requests (ESRCH) while
# nobody listens, so start-up races are avoided by waiting for the join, whatever the agent.
handshake_group_id() {
    genl ctrl get name handshake 2>/dev/null \
        | sed -n 's/.*ID-\(0x[0-9a-f]*\)  *name: tlshd.*/\1/p' | head -1
}
# group_listener_inodes: socket inodes of NETLINK_GENERIC sockets joined to the tlshd group.
group_listener_inodes() {
    _gid=$(handshake_group_id)
    [ -n "$_gid" ] || return 0
    _gid=$((_gid))
    [ "$_gid" -le 32 ] || return 0   # the Groups column shows the first 32 groups only
    while read -r _sk _eth _pid _groups _rm _wm _dump _locks _drops _inode _rest; do
        [ "$_eth" = 16 ] || continue
        [ $(( (0x$_groups >> (_gid - 1)) & 1 )) = 1 ] && echo "$_inode"
    done < /proc/net/netlink
}
agent_joined() { [ -n "$(group_listener_inodes)" ]; }
# group_listener_pids: the processes holding those sockets.
group_listener_pids() {
    for _ino in $(group_listener_inodes); do
        find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\\[$_ino\\]" 2>/dev/null
    done | cut -d/ -f3 | sort -u
}
# wait_agent_joined SECONDS [PID]: fails early if PID dies.
wait_agent_joined() {
    _n=$(( $1 * 10 ))
    while [ "$_n" -gt 0 ]; do
        agent_joined && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
        sleep 0.1
        _n=$((_n - 1))
    done
    return 1
}

# descends PID ANCESTOR: true if PID is ANCESTOR or one of its descendants.
descends() {
    _p=$1
    while [ -n "$_p" ] && [ "$_p" -gt 1 ]; do
        [ "$_p" = "$2" ] && return 0
        _p=$(awk '{print $4}' "/proc/$_p/stat" 2>/dev/null)   # comm has no spaces here
    done
    return 1
}

# tls_stat NAME: one counter of /proc/net/tls_stat (0 if absent).
tls_stat() { awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }' /proc/net/tls_stat; }
