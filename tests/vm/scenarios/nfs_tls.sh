#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# NFSv4.2 over TLS (X.509), all on 127.0.0.1 in a vm/run guest: knfsd exports a tmpfs with
# xprtsec=tls:mtls; one agent serves both the NFS client's handshakes (CLIENTHELLO: UNAUTH
# with a peer name for xprtsec=tls, X509 for xprtsec=mtls) and knfsd's (SERVERHELLO, X509).
#
# Phases, each with its own facts (prefix tls_, mtls_, untrusted_):
#   tls        mount -o xprtsec=tls, a file written through the mount, the page cache dropped,
#              read back through the mount, compared with the copy in the export directory;
#              kTLS on both ends (ss -tni, /proc/net/tls_stat); umount
#   mtls       the same with xprtsec=mtls (the client presents its certificate)
#   untrusted  the client's trust store is replaced (new file, same path) by another CA's:
#              the server's certificate no longer verifies, the mount must fail
# Kernel side evidence (tests/vm/scenarios/handshake_trace.sh): ACCEPT/DONE counts from
# tracefs events/handshake and, per consumer, the status and first REMOTE_AUTH its completion
# callback received (knfsd's must be 0xffffffff after a client certificate was verified).
#
# AGENT: "tlshd" (Debian sid's) or a command line with the word CONFIG (see agent.sh).
# KEY_KIND (rsa): kind of keys (rsa = RSA-2048, as tlshd's recipe; or ecdsa).
# Prints "@@ key value" facts and exits non-zero if any phase failed.
set -u
. "$VM_ROOT/vm/guest/lib.sh"
HERE=$(dirname "$0")
. "$HERE/handshake_trace.sh"
. "$HERE/agent.sh"

TAG=${SCENARIO_TAG:-nfs_tls}
OUT=$VM_WORK/$TAG
mkdir -p "$OUT"
EXPORT=/srv/nfs-$TAG            # inside the chroot
MNT=/mnt/nfs-$TAG               # inside the chroot
FAILED=
MOUNTED=
RPCBIND_PID=
MOUNTD_PID=

cleanup() {
    [ -n "$MOUNTED" ] && sid umount -f "$MOUNTED" 2>/dev/null
    sid rpc.nfsd 0 2>/dev/null
    sid exportfs -ua 2>/dev/null
    for pid in $MOUNTD_PID $RPCBIND_PID; do kill "$pid" 2>/dev/null; done
    agent_stop
    umount "$SID$EXPORT" 2>/dev/null
    umount "$SID/proc/fs/nfsd" 2>/dev/null
    rm -f "/run/$TAG".*
}
trap cleanup EXIT
trap 'exit 143' TERM INT
fail() { fact failed "$*"; echo "FAIL: $*" >&2; [ -f "$OUT/agent.log" ] && { echo "--- agent log (tail)"; tail -40 "$OUT/agent.log"; }; exit 1; }
phase_fail() { echo "FAIL: $1: $2" >&2; fact "${1}_failed" "$2"; FAILED="$FAILED $1"; }
# stuck: what blocked tasks wait for (a hung NFS operation)
stuck() {
    for _t in /proc/[0-9]*; do
        grep -q '^State:.*D' "$_t/status" 2>/dev/null || continue
        echo "--- blocked: $(cat "$_t/comm") ($(basename "$_t"))"; cat "$_t/stack" 2>/dev/null
    done
    dmesg | tail -30
}
since() { awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $1}"; }

vm_step "modules"
fact agent "$AGENT"
sid_up
for m in tls nfsd nfsv4; do modprobe "$m" || fail "modprobe $m"; done
trace_start || echo "no tracefs handshake events" >&2

vm_step "NFS server"
# started before the agent: the grace period (10 s at least) runs while the agent starts
mkdir -p "$SID/proc/fs/nfsd" "$SID$EXPORT" "$SID$MNT-tls" "$SID$MNT-mtls" "$SID$MNT-untrusted"
mountpoint -q "$SID/proc/fs/nfsd" || mount -t nfsd nfsd "$SID/proc/fs/nfsd" || fail "mount nfsd fs"
mount -t tmpfs -o size=64m,mode=0777 "nfs-$TAG" "$SID$EXPORT" || fail "tmpfs for the export"
echo 10 > "$SID/proc/fs/nfsd/nfsv4gracetime"
echo 10 > "$SID/proc/fs/nfsd/nfsv4leasetime"
echo "$EXPORT 127.0.0.1(rw,no_root_squash,insecure,no_subtree_check,fsid=0,xprtsec=tls:mtls)" \
    > "$SID/etc/exports"
( sid_exec rpcbind -f -w ) > "$OUT/rpcbind.log" 2>&1 &
RPCBIND_PID=$!
for _ in $(seq 50); do sid rpcinfo -p >/dev/null 2>&1 && break; sleep 0.1; done
sid exportfs -ra || fail "exportfs"
sid exportfs -v
( sid_exec rpc.mountd -F ) > "$OUT/mountd.log" 2>&1 &
MOUNTD_PID=$!
sid rpc.nfsd 2 || fail "rpc.nfsd"
NFSD_UP=$(vm_uptime)
cat "$SID/proc/fs/nfsd/versions"; echo

vm_step "certificates"
"$VM_ROOT/.venv/bin/python" - "$OUT" "${KEY_KIND:-rsa}" <<'PY' || fail "certificates"
import importlib.util, os, sys
from pathlib import Path

# selfsigned.py by path: the quichsd.tls package would load GnuTLS for nothing
here = Path(os.environ["VM_ROOT"]) / "quichsd" / "tls" / "selfsigned.py"
spec = importlib.util.spec_from_file_location("selfsigned", here)
assert spec and spec.loader
mod = importlib.util.module_from_spec(spec)
sys.modules["selfsigned"] = mod  # dataclasses look their module up
spec.loader.exec_module(mod)
out, kind = Path(sys.argv[1]), sys.argv[2]
ca = mod.make_ca("quichsd vm NFS CA", kind=kind)
other = mod.make_ca("a CA nobody here trusts", kind=kind)
names = ("localhost", "127.0.0.1")
server = mod.issue(ca, names, kind=kind)
client = mod.issue(ca, names, kind=kind)
for name, data in {
    "ca.pem": ca.cert_pem, "other-ca.pem": other.cert_pem,
    "server.pem": server.cert_pem, "server.key": server.key_pem,
    "client.pem": client.cert_pem, "client.key": client.key_pem,
}.items():
    (out / name).write_bytes(data)
    os.chmod(out / name, 0o600 if name.endswith(".key") else 0o644)
PY
cp "$OUT/ca.pem" "$OUT/client-trust.pem"
cat > "$OUT/agent.conf" <<EOF
[debug]
loglevel=1

[authenticate.client]
x509.truststore=$OUT/client-trust.pem
x509.certificate=$OUT/client.pem
x509.private_key=$OUT/client.key

[authenticate.server]
x509.truststore=$OUT/ca.pem
x509.certificate=$OUT/server.pem
x509.private_key=$OUT/server.key
EOF

vm_step "agent"
agent_start "$OUT/agent.conf" "$OUT/agent.log" || fail "agent start"
fact listeners "$(group_listener_pids | tr '\n' ' ')"

# mount_phase NAME XPRTSEC: mount, write, drop caches, read back, compare, kTLS, umount
mount_phase() {
    _p=$1
    _m=$SID$MNT-$_p
    vm_step "$_p: mount"
    _a0=$(trace_count handshake_cmd_accept)
    _t0=$(vm_uptime)
    timeout 90 chroot "$SID" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        mount -t nfs4 -o "vers=4.2,xprtsec=$2" 127.0.0.1:/ "$MNT-$_p" > "$OUT/$_p.mount" 2>&1
    _rc=$?
    cat "$OUT/$_p.mount"
    fact "${_p}_mount_rc" "$_rc"
    fact "${_p}_mount_s" "$(since "$_t0")"
    [ "$_rc" = 0 ] || { phase_fail "$_p" "mount -o xprtsec=$2 failed ($_rc)"; return 1; }
    MOUNTED=$MNT-$_p
    grep " $_m " /proc/mounts
    fact "${_p}_xprtsec" "$(grep " $_m " /proc/mounts | grep -o 'xprtsec=[a-z]*' | head -1)"

    vm_step "$_p: write, read back"
    _t0=$(vm_uptime)
    head -c 1048576 /dev/urandom > "/run/$TAG.$_p"
    if ! timeout -k 5 "${IO_TIMEOUT:-60}" dd if="/run/$TAG.$_p" of="$_m/file-$_p" bs=256k \
            oflag=direct status=none \
        || ! timeout -k 5 30 sync -f "$_m/file-$_p"; then
        phase_fail "$_p" "write through the mount"
        stuck
        return 1
    fi
    # read back with O_DIRECT, so from the server (not /proc/sys/vm/drop_caches: dropping
    # every cache makes the guest re-read its binaries over virtio-fs, and it froze here)
    timeout -k 5 60 dd if="$_m/file-$_p" of="/run/$TAG.$_p.back" bs=256k iflag=direct status=none \
        || phase_fail "$_p" "O_DIRECT read through the mount"
    _a=$(sha256sum < "/run/$TAG.$_p" | cut -d' ' -f1)
    _b=$(sha256sum < "/run/$TAG.$_p.back" | cut -d' ' -f1)      # through the mount
    _c=$(sha256sum < "$SID$EXPORT/file-$_p" | cut -d' ' -f1)  # the server's export
    fact "${_p}_io_s" "$(since "$_t0")"
    fact "${_p}_sha_written" "$_a"
    fact "${_p}_sha_read" "$_b"
    fact "${_p}_sha_export" "$_c"
    if [ "$_a" != "$_b" ] || [ "$_a" != "$_c" ]; then phase_fail "$_p" "contents differ"; fi

    vm_step "$_p: kTLS"
    ss -tni '( sport = :2049 or dport = :2049 )' > "$OUT/$_p.ss"
    cat "$OUT/$_p.ss"
    fact "${_p}_ss_ulp" "$(grep -o 'tcp-ulp-tls version: [^ ]* cipher: [^ ]*' "$OUT/$_p.ss" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
    fact "${_p}_ss_tls_sockets" "$(grep -c 'tcp-ulp-tls' "$OUT/$_p.ss")"
    fact "${_p}_ss_sockets" "$(grep -c '^ESTAB' "$OUT/$_p.ss")"
    fact "${_p}_tls_curr_tx" "$(tls_stat TlsCurrTxSw)"
    fact "${_p}_tls_curr_rx" "$(tls_stat TlsCurrRxSw)"
    fact "${_p}_accepts" $(( $(trace_count handshake_cmd_accept) - _a0 ))
    vm_step "$_p: umount"
    sid umount "$MNT-$_p" || phase_fail "$_p" "umount"
    MOUNTED=
    fact "${_p}_ok" 1
}

# the grace period started with nfsd: an OPEN before its end waits for it
fact grace_left_at_first_mount "$(awk "BEGIN{g = 10 - ($(vm_uptime) - $NFSD_UP); printf \"%.1f\", (g > 0 ? g : 0)}")"
mount_phase tls tls
mount_phase mtls mtls

vm_step "untrusted: mount"
# a new file at the same path: tlshd reads it at each handshake, quichsd notices the change
cp "$OUT/other-ca.pem" "$OUT/client-trust.pem.new" && mv "$OUT/client-trust.pem.new" "$OUT/client-trust.pem"
failed0=$(grep -c 'failed' "$OUT/agent.log")
a0=$(trace_count handshake_cmd_accept)
t0=$(vm_uptime)
timeout 120 chroot "$SID" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    mount -t nfs4 -o vers=4.2,xprtsec=tls,retry=0 127.0.0.1:/ "$MNT-untrusted" > "$OUT/untrusted.mount" 2>&1
rc=$?
cat "$OUT/untrusted.mount"
fact untrusted_mount_rc "$rc"
fact untrusted_mount_s "$(since "$t0")"
fact untrusted_mount_msg "$(tr '\n' ' ' < "$OUT/untrusted.mount")"
if [ "$rc" = 0 ]; then
    MOUNTED=$MNT-untrusted
    phase_fail untrusted "the mount succeeded against an untrusted server certificate"
fi
sleep 1
fact untrusted_accepts $(( $(trace_count handshake_cmd_accept) - a0 ))
fact untrusted_agent_failures $(( $(grep -c 'failed' "$OUT/agent.log") - failed0 ))
fact untrusted_agent_eacces "$(grep -c 'failed.*EACCES' "$OUT/agent.log")"
fact untrusted_agent_lines "$(grep 'failed' "$OUT/agent.log" | tail -3 | tr '\n' '|')"
[ "$rc" != 0 ] && fact untrusted_ok 1

vm_step "kernel's view"
trace_stop
trace_facts trace
trace_lines hsdone > "$OUT/done-callbacks.txt"
grep ': handshake_' "$TRACEFS/trace" > "$OUT/handshake-events.txt"
cat "$OUT/done-callbacks.txt"
echo "--- agent log"
cat "$OUT/agent.log"
vm_step "done"
[ -z "$FAILED" ] || fail "phases failed:$FAILED"
fact ok 1
