#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# NVMe/TCP over TLS 1.3 with a PSK, all on 127.0.0.1, in a vm/run guest (one kernel, host and
# target sides both kernel consumers of the handshake family): an nvmet port with
# addr_tsas=tls1.3, `nvme gen-tls-key --insert`, `nvme connect --tls`, 8 MiB written with
# O_DIRECT and read back, kTLS counters checked, disconnect. Each connect makes 2 TCP
# connections (admin + 1 I/O queue) and 4 handshakes (2 client, 2 server).
#
# AGENT: "tlshd" (default: Debian sid's tlshd from the chroot) or a command line with the word
#   CONFIG (see agent.sh: run from the guest root, or from the sid chroot after a word "sid"),
#   CONFIG being a config file written here ([debug] loglevel=1; tlshd gets the same file).
# HMAC (1): the PSK's hash for `nvme gen-tls-key --hmac` (1 SHA-256, 2 SHA-384).
# HOST_KEYRING: a keyring name; the host's PSK then lives there (see below) and the connect
#   names it, so the kernel sends its serial in ACCEPT's KEYRING attribute.
# PORT (4420), MIB (8): the nvmet port and the amount of data; AGENT_JOIN_TIMEOUT (120 s):
#   how long the agent may take to join the tlshd group (quichsd took up to 23 s under TCG).
# Prints "@@ key value" facts (tests/vm/rig.py parses them) and exits non-zero on failure.
set -u
. "$VM_ROOT/vm/guest/lib.sh"
. "$VM_ROOT/tests/vm/scenarios/nvmet.sh"
. "$VM_ROOT/tests/vm/scenarios/handshake_trace.sh"
. "$VM_ROOT/tests/vm/scenarios/agent.sh"

PORT=${PORT:-4420}
MIB=${MIB:-8}
TAG=${SCENARIO_TAG:-nvme$PORT}
OUT=$VM_WORK/$TAG
mkdir -p "$OUT"
HOSTID=$(cat /proc/sys/kernel/random/uuid)
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$HOSTID
SUBNQN=nqn.2026-11.org.quichsd:vm-$TAG
CONNECTED=0

cleanup() {
    [ "$CONNECTED" = 1 ] && sid nvme disconnect -n "$SUBNQN" >/dev/null 2>&1
    nvmet_target_down "$PORT" "$SUBNQN" "$HOSTNQN"
    agent_stop
    rm -f "/run/$TAG.img" "/run/$TAG.pattern" "/run/$TAG.readback" "/run/$TAG.psk"
}
trap cleanup EXIT
trap 'exit 143' TERM INT   # so that a timeout's TERM still runs cleanup
fail() { fact failed "$*"; echo "FAIL: $*" >&2; [ -f "$OUT/agent.log" ] && { echo "--- agent log (tail)"; tail -40 "$OUT/agent.log"; }; exit 1; }

vm_step "modules"
fact agent "$AGENT"
sid_up
for m in tls nvme-tcp nvmet nvmet-tcp; do modprobe "$m" || fail "modprobe $m"; done
[ -r /proc/net/tls_stat ] || fail "no /proc/net/tls_stat"
trace_start || fail "no tracefs handshake events"
fact versions "$(sid dpkg-query -W -f='${Package}=${Version} ' ktls-utils nvme-cli)"

vm_step "agent"
# Another agent still listening would take the requests: this scenario must own the group.
agent_joined && fail "an agent is already listening on the tlshd group before ours started"
printf '[debug]\nloglevel=1\n' > "$OUT/agent.conf"
agent_start "$OUT/agent.conf" "$OUT/agent.log" || fail "the agent did not start and join the tlshd group"

vm_step "PSK"
CONNECT_KEYRING=
if [ -n "${HOST_KEYRING:-}" ]; then
    # The host takes its PSK from a keyring of its own (nvme connect --keyring), which the
    # kernel names in ACCEPT's KEYRING attribute; the agent, which does not possess it, must
    # link it by that serial to read the key. The target keeps finding the same bytes under
    # the same identity in .nvme (the agent possesses .nvme, linked at its start). uid 0 may
    # link the host's keyring, but only a possessor may read its key: the agent, in a session
    # keyring of its own, reads it only after linking the keyring ACCEPT named.
    head -c 32 /dev/urandom > "/run/$TAG.psk"
    desc="NVMe0R01 $HOSTNQN $SUBNQN"
    kr=$(sid keyctl newring "$HOST_KEYRING" @u) && sid keyctl setperm "$kr" 0x3f1b0000 \
        || fail "keyring $HOST_KEYRING"
    k=$(sid sh -c "keyctl padd psk '$desc' $kr" < "/run/$TAG.psk") || fail "psk into $HOST_KEYRING"
    nvme_ring=$(awk '$9 == ".nvme:" { print $1 }' /proc/keys)
    sid sh -c "keyctl padd psk '$desc' $((0x$nvme_ring))" < "/run/$TAG.psk" || fail "psk into .nvme"
    fact host_keyring "$kr"
    fact host_psk "$k"
    # the control: from a fresh session keyring, without the link, the key does not read
    sid keyctl session - keyctl pipe "$k" > /dev/null 2>&1
    fact unlinked_read_rc "$?"
    CONNECT_KEYRING=$kr
else
    key=$(sid nvme gen-tls-key --hmac="${HMAC:-1}" --hostnqn="$HOSTNQN" --subsysnqn="$SUBNQN" --insert 2>&1) \
        || fail "nvme gen-tls-key: $key"
    echo "$key"
fi
grep -q ' psk .*NVMe' /proc/keys || fail "no psk key in /proc/keys"
grep ' psk \| keyring .*\.nvme' /proc/keys

vm_step "nvmet target"
truncate -s $((MIB * 2))M "/run/$TAG.img"
nvmet_target_up "$PORT" "$SUBNQN" "$HOSTNQN" "/run/$TAG.img" || fail "nvmet target"
fact treq "$(cat "$NVMET_CFS/ports/$PORT/addr_treq")"

vm_step "connect"
tx0=$(tls_stat TlsTxSw); rx0=$(tls_stat TlsRxSw)
t0=$(vm_uptime)
if [ -n "$CONNECT_KEYRING" ]; then
    # Through the kernel's own interface, by serial: with nvme-cli 2.16, --keyring=NAME did
    # not reach the kernel here (the host took .nvme's copy of the key, silently).
    opts="transport=tcp,traddr=127.0.0.1,trsvcid=$PORT,nqn=$SUBNQN,hostnqn=$HOSTNQN"
    opts="$opts,hostid=$HOSTID,nr_io_queues=1,tls,keyring=$CONNECT_KEYRING"
    { exec 3<>/dev/nvme-fabrics && printf '%s' "$opts" >&3 && head -n1 <&3; } > "$OUT/connect.log" 2>&1
    rc=$?
    exec 3>&-
else
    sid nvme connect -t tcp -a 127.0.0.1 -s "$PORT" -n "$SUBNQN" --hostnqn="$HOSTNQN" \
        --hostid="$HOSTID" --tls --nr-io-queues=1 > "$OUT/connect.log" 2>&1
    rc=$?
fi
cat "$OUT/connect.log"
fact connect_rc "$rc"
fact connect_s "$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $t0}")"
[ "$rc" = 0 ] || fail "nvme connect --tls failed ($rc)"
CONNECTED=1
# The namespace's block device: under the subsystem with native multipath (nvme0n1 for
# nvme0c0n1), else under the controller.
find_dev() {
    for c in /sys/class/nvme-subsystem/* /sys/class/nvme/*; do
        [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$SUBNQN" ] || continue
        for n in "$c"/nvme*n*; do
            [ -b "/dev/${n##*/}" ] && { echo "/dev/${n##*/}"; return 0; }
        done
    done
    return 1
}
dev=
for _ in $(seq 100); do
    dev=$(find_dev) && break
    sleep 0.1
done
[ -n "$dev" ] || fail "no namespace block device after connect"
fact device "$dev"
ss -tni > "$OUT/ss.txt" 2>&1
grep -q "tcp-ulp-tls" "$OUT/ss.txt" && fact ss_ulp "$(grep -o 'tcp-ulp-tls[^ ]* version: [^ ]* cipher: [^ ]*' "$OUT/ss.txt" | sort | uniq -c | tr -s ' ' | head -1)"
fact tls_curr_tx "$(tls_stat TlsCurrTxSw)"
fact tls_curr_rx "$(tls_stat TlsCurrRxSw)"

vm_step "I/O"
head -c $((MIB * 1048576)) /dev/urandom > "/run/$TAG.pattern"
dd if="/run/$TAG.pattern" of="$dev" bs=1M count="$MIB" oflag=direct status=none || fail "O_DIRECT write"
dd if="$dev" of="/run/$TAG.readback" bs=1M count="$MIB" iflag=direct status=none || fail "O_DIRECT read"
a=$(sha256sum < "/run/$TAG.pattern" | cut -d' ' -f1)
b=$(sha256sum < "/run/$TAG.readback" | cut -d' ' -f1)
fact sha_written "$a"
fact sha_read "$b"
[ "$a" = "$b" ] || fail "read-back digest differs"

vm_step "disconnect"
sid nvme disconnect -n "$SUBNQN" || fail "nvme disconnect"
CONNECTED=0
tx1=$(tls_stat TlsTxSw); rx1=$(tls_stat TlsRxSw)
fact tls_tx_delta $((tx1 - tx0))
fact tls_rx_delta $((rx1 - rx0))
echo "--- /proc/net/tls_stat"; cat /proc/net/tls_stat
[ $((tx1 - tx0)) -ge 4 ] && [ $((rx1 - rx0)) -ge 4 ] || fail "kTLS counters did not grow by 4 sockets"
fact tls_curr_tx_after "$(tls_stat TlsCurrTxSw)"
vm_step "done"
trace_stop
trace_facts trace
fact agent_log_succeeded "$(grep -c succeeded "$OUT/agent.log")"
fact agent_ciphers "$(grep -o 'cipher TLS_[A-Z0-9_]*' "$OUT/agent.log" | sort -u | tr '\n' ' ')"
echo "--- agent log (tail)"; tail -20 "$OUT/agent.log"
fact ok 1
