#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# The shipped systemd/quichsd.service under real systemd (the host's, PID 1 of a VM_SYSTEMD=1
# boot, see vm/guest/init) on sid's kernel: `quichsd install-service` renders the unit into
# /run/systemd/system, `systemctl start` must wait for READY=1 (Type=notify), then one
# `nvme connect --tls` (PSK, 127.0.0.1) is served through the unit's sandbox, its handshakes are
# read back from journald, every worker holds no capability and runs under its own seccomp
# filter before and after serving, STATUS= and the status socket show the counts, `systemctl reload`
# (SIGHUP) keeps the main PID, `systemctl stop` ends it cleanly, and `systemd-analyze
# security` scores the running unit.
#
# One drop-in adapts the unit to this rig, not to the daemon: the guest's / is the host's,
# read-only and without /etc/tlshd/config (the file a package installs, and which quichsd, like
# tlshd, refuses to start without), so ExecStart= gains -c with the example configuration that
# install-service wrote; and where the project's Python lives under /root (pyenv), which
# ProtectHome=yes hides, ProtectHome=tmpfs plus a read-only bind of that one folder.
#
# PORT (4422). Prints "@@ key value" facts (tests/vm/rig.py) and exits non-zero on failure.
set -u
. "$VM_ROOT/vm/guest/lib.sh"
. "$VM_ROOT/tests/vm/scenarios/nvmet.sh"
. "$VM_ROOT/tests/vm/scenarios/handshake_trace.sh"

PORT=${PORT:-4422}
TAG=${SCENARIO_TAG:-systemd_unit}
OUT=$VM_WORK/$TAG
mkdir -p "$OUT"
VENV=$VM_ROOT/.venv
UNIT_DIR=/run/systemd/system
HOSTID=$(cat /proc/sys/kernel/random/uuid)
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$HOSTID
SUBNQN=nqn.2026-11.org.quichsd:vm-$TAG
CONNECTED=0

cleanup() {
    [ "$CONNECTED" = 1 ] && sid nvme disconnect -n "$SUBNQN" >/dev/null 2>&1
    nvmet_target_down "$PORT" "$SUBNQN" "$HOSTNQN"
    systemctl stop quichsd.service 2>/dev/null
    journalctl -u quichsd.service --no-pager -o short-monotonic > "$OUT/journal.txt" 2>&1
    rm -f "/run/$TAG.img"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
fail() {
    fact failed "$*"; echo "FAIL: $*" >&2
    systemctl status quichsd.service --no-pager -l 2>&1 | tail -30
    journalctl -u quichsd.service --no-pager -n 40 2>&1
    exit 1
}
show() { systemctl show -P "$1" quichsd.service; }
proc_field() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
# The workers are the children of the fork server, the main process's one child. Each
# confines itself (capabilities, no_new_privs, its own seccomp filter on top of the unit's)
# before its first job: waits (bounded) until every one has, then prints, ';'-separated,
# "PID CapEff=...,CapPrm=...,CapBnd=...,CapAmb=...,NoNewPrivs=...,Seccomp=...".
worker_status() {
    fs=$(pgrep -P "$MAIN" | head -1)
    [ -n "$fs" ] || return 1
    for _ in $(seq 100); do
        pending=0
        for w in $(pgrep -P "$fs"); do
            [ "$(proc_field Seccomp_filters "$w")" -gt "$(proc_field Seccomp_filters "$MAIN")" ] \
                || pending=1
        done
        [ "$pending" = 0 ] && break
        sleep 0.1
    done
    for w in $(pgrep -P "$fs"); do
        printf '%s ' "$w"
        for k in CapEff CapPrm CapBnd CapAmb NoNewPrivs Seccomp; do
            printf '%s=%s,' "$k" "$(proc_field "$k" "$w")"
        done
        printf ';'
    done
}

vm_step "systemd"
fact pid1 "$(cat /proc/1/comm)"
[ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is $(cat /proc/1/comm), not systemd"
fact systemd_version "$(systemctl --version | head -1)"
sid_up
for m in tls nvme-tcp nvmet nvmet-tcp; do modprobe "$m" || fail "modprobe $m"; done
trace_start || fail "no tracefs handshake events"

vm_step "install"
"$VENV/bin/quichsd" install-service --unit-dir "$UNIT_DIR" --config-path "$OUT/tlshd-config" \
    --no-man || fail "quichsd install-service"
exec_start=$(sed -n "s/^ExecStart=//p" "$UNIT_DIR/quichsd.service")
fact exec_start "$exec_start"
base=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')
mkdir -p "$UNIT_DIR/quichsd.service.d"
{
    echo "[Service]"
    echo "ExecStart="
    echo "ExecStart=$exec_start -c $OUT/tlshd-config"
    case $base in
        /root/*|/home/*) printf 'ProtectHome=tmpfs\nBindReadOnlyPaths=%s\n' "$base" ;;
    esac
    # a checkout under /tmp (a CI clone): PrivateTmp= would hide the daemon's own code
    for p in "$VM_ROOT" "$OUT"; do
        case $p in /tmp/*|/var/tmp/*) echo "PrivateTmp=no"; break ;; esac
    done
} > "$UNIT_DIR/quichsd.service.d/rig.conf"
cat "$UNIT_DIR/quichsd.service.d/rig.conf"
systemctl daemon-reload || fail "daemon-reload"
fact unit_type "$(show Type)"

vm_step "start"
t0=$(vm_uptime)
# Type=notify: returns once the daemon sent READY=1 (or fails with the unit).
timeout 180 systemctl start quichsd.service
rc=$?
fact start_rc "$rc"
fact start_s "$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $t0}")"
[ "$rc" = 0 ] || fail "systemctl start quichsd failed ($rc)"
fact active_state "$(show ActiveState)/$(show SubState)"
MAIN=$(show MainPID)
fact main_pid "$MAIN"
fact status_ready "$(show StatusText)"
fact watchdog_usec "$(show WatchdogUSec)"
agent_joined || fail "quichsd is active but nobody joined the tlshd group"
for p in $(group_listener_pids); do
    descends "$p" "$MAIN" || fail "tlshd-group listener $p is not quichsd's (main $MAIN)"
done
fact cap_eff "$(awk '/^CapEff/ {print $2}' "/proc/$MAIN/status")"
fact cap_bnd "$(proc_field CapBnd "$MAIN")"
FORKSRV=$(pgrep -P "$MAIN" | head -1)
fact forkserver_comm "$(cat "/proc/$FORKSRV/comm" 2>/dev/null)"
fact forkserver_cap_eff "$(proc_field CapEff "$FORKSRV")"
fact worker_status "$(worker_status)"
fact no_new_privs "$(awk '/^NoNewPrivs/ {print $2}' "/proc/$MAIN/status")"
fact seccomp "$(awk '/^Seccomp:/ {print $2}' "/proc/$MAIN/status")"

vm_step "nvme connect"
key=$(sid nvme gen-tls-key --hostnqn="$HOSTNQN" --subsysnqn="$SUBNQN" --insert 2>&1) \
    || fail "nvme gen-tls-key: $key"
PSK_TEXT=$(echo "$key" | grep -o 'NVMeTLSkey-1:[^ ]*' | head -1)
truncate -s 16M "/run/$TAG.img"
nvmet_target_up "$PORT" "$SUBNQN" "$HOSTNQN" "/run/$TAG.img" || fail "nvmet target"
tx0=$(tls_stat TlsTxSw)
sid nvme connect -t tcp -a 127.0.0.1 -s "$PORT" -n "$SUBNQN" --hostnqn="$HOSTNQN" \
    --hostid="$HOSTID" --tls --nr-io-queues=1 > "$OUT/connect.log" 2>&1
rc=$?
cat "$OUT/connect.log"
fact connect_rc "$rc"
[ "$rc" = 0 ] || fail "nvme connect --tls through the unit failed ($rc)"
CONNECTED=1
sid nvme disconnect -n "$SUBNQN" > /dev/null || fail "nvme disconnect"
CONNECTED=0
fact tls_tx_delta $(( $(tls_stat TlsTxSw) - tx0 ))
fact worker_status_after "$(worker_status)"
fact trace_accepts "$(trace_count handshake_cmd_accept)"
fact trace_dones "$(trace_count handshake_cmd_done)"
trace_stop

vm_step "journal"
# The per-handshake records (MESSAGE_ID of a success), by structured field.
for _ in $(seq 50); do
    n=$(journalctl -u quichsd.service -o json QUICHSD_STATUS=0 --no-pager 2>/dev/null | grep -c .)
    [ "$n" -ge 4 ] && break
    sleep 0.2
done
journalctl -u quichsd.service -o json QUICHSD_STATUS=0 --no-pager > "$OUT/records.json"
fact journal_records "$(grep -c . "$OUT/records.json")"
fact journal_transports "$(grep -o '"QUICHSD_TRANSPORT":"[a-z]*"' "$OUT/records.json" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
fact journal_roles "$(grep -o '"QUICHSD_ROLE":"[a-z]*"' "$OUT/records.json" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
fact journal_auth "$(grep -o '"QUICHSD_AUTH":"[a-z0-9]*"' "$OUT/records.json" | sort -u | tr '\n' ' ')"
journalctl -u quichsd.service -o json --no-pager > "$OUT/all.json"
# The PSK's text form and its base64 body must appear nowhere in the journal.
body=$(echo "$PSK_TEXT" | cut -d: -f3)
fact psk_known "$([ -n "$body" ] && echo 1 || echo 0)"
fact psk_in_journal "$(grep -c -F -e "$body" "$OUT/all.json")"
fact status_served "$(show StatusText)"
"$VENV/bin/quichsd" status > "$OUT/status.txt" 2>&1
fact status_rc "$?"
cat "$OUT/status.txt"

vm_step "reload"
systemctl reload quichsd.service || fail "systemctl reload"
for _ in $(seq 100); do
    journalctl -u quichsd.service --no-pager -o cat | grep -q 'configuration reloaded' && break
    sleep 0.2
done
fact reloaded "$(journalctl -u quichsd.service --no-pager -o cat | grep -c 'configuration reloaded')"
fact main_pid_after_reload "$(show MainPID)"
fact active_after_reload "$(show ActiveState)"

vm_step "security"
systemd-analyze security --no-pager quichsd.service > "$OUT/security.txt" 2>&1
fact security "$(grep -o 'Overall exposure level for quichsd.service: .*' "$OUT/security.txt")"

vm_step "stop"
t0=$(vm_uptime)
systemctl stop quichsd.service
fact stop_rc "$?"
fact stop_s "$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $t0}")"
fact state_after_stop "$(show ActiveState)/$(show Result)"
fact exit_status "$(show ExecMainStatus)"
agent_joined && fail "something still listens on the tlshd group after stop"
vm_step "done"
fact ok 1
