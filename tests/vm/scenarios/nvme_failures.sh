#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# NVMe/TCP over TLS when things go wrong, with one agent for both phases (nvmet port with
# addr_tsas=tls1.3 on 127.0.0.1:PORT, connects written straight to /dev/nvme-fabrics by
# nvme_burst.py):
#
#   wrong_psk  the host connects with a PSK whose identity the target knows but whose bytes
#              differ (a `psk` key with the same description, kept in a private session
#              keyring the agent cannot search, named with tls_key=SERIAL): every connect
#              fails, and every request the agent ACCEPTed got its DONE (tracefs
#              handshake_cmd_accept = handshake_cmd_done, one "request N ... failed" line
#              per ACCEPT in the agent's log, no success).
#   sigterm    4 threads connect/disconnect with the right PSK; once the agent has finished
#              a few handshakes it gets SIGTERM: it must exit 0, the consumers see
#              successes or failures (nobody hangs), and every ACCEPT still got exactly one
#              DONE (tracefs, and one log line per request id).
#
# AGENT (see agent.sh), PORT (4421), BURST (40 connects), THREADS (4), TERM_AFTER (SIGTERM
# right after this phase's 10th ACCEPT), NETEM_MS (30: delay added on lo in this phase).  Prints "@@ key value" facts (prefixes wrong_psk_,
# sigterm_, trace_) and exits non-zero on a setup failure or a broken invariant.
set -u
. "$VM_ROOT/vm/guest/lib.sh"
. "$VM_ROOT/tests/vm/scenarios/nvmet.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/handshake_trace.sh"
. "$HERE/agent.sh"

PORT=${PORT:-4421}
BURST=${BURST:-40}
THREADS=${THREADS:-4}
TERM_AFTER=${TERM_AFTER:-10}
TAG=${SCENARIO_TAG:-nvme_failures}
OUT=$VM_WORK/$TAG
mkdir -p "$OUT"
HOSTID=$(cat /proc/sys/kernel/random/uuid)
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$HOSTID
SUBNQN=nqn.2026-11.org.quichsd:vm-$TAG
PY=$VM_ROOT/.venv/bin/python
SLEEPER=
BURST_PID=
BROKEN=
NETEM=
WATCH_PID=

controllers() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$SUBNQN" ] && basename "$c"
    done
}
disconnect_all() {
    for c in $(controllers); do echo 1 > "/sys/class/nvme/$c/delete_controller" 2>/dev/null; done
}
cleanup() {
    [ -n "$BURST_PID" ] && kill "$BURST_PID" 2>/dev/null
    [ -n "$NETEM" ] && tc qdisc del dev lo root
    [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
    rmdir /sys/kernel/tracing/instances/quichsd-sigterm 2>/dev/null
    disconnect_all
    nvmet_target_down "$PORT" "$SUBNQN" "$HOSTNQN"
    [ -n "$SLEEPER" ] && kill "$SLEEPER" 2>/dev/null
    agent_stop
    rm -f "/run/$TAG.img" "/tmp/$TAG".*
}
trap cleanup EXIT
trap 'exit 143' TERM INT
fail() { fact failed "$*"; echo "FAIL: $*" >&2; [ -f "$OUT/agent.log" ] && { echo "--- agent log (tail)"; tail -40 "$OUT/agent.log"; }; exit 1; }
broken() { echo "BROKEN: $*" >&2; fact "broken_$1" "$2"; BROKEN="$BROKEN $1"; }
# request_lines: the agent's one line per finished request ("request N: ... succeeded|failed")
request_lines() { grep -E 'request [0-9]+: .* (succeeded|failed)' "$OUT/agent.log"; }
count_lines() { request_lines | grep -c "$1"; }
# wait_logged N SECONDS: until the agent's log holds N request lines
wait_logged() {
    _end=$(awk "BEGIN{print $(vm_uptime) + $2}")
    while [ "$(request_lines | wc -l)" -lt "$1" ] && awk "BEGIN{exit !($(vm_uptime) < $_end)}"; do
        sleep 0.2
    done
}

vm_step "modules"
fact agent "$AGENT"
sid_up
for m in tls nvme-tcp nvmet nvmet-tcp; do modprobe "$m" || fail "modprobe $m"; done
trace_start || echo "no tracefs handshake events" >&2

vm_step "agent"
printf '[debug]\nloglevel=1\n' > "$OUT/agent.conf"
agent_start "$OUT/agent.conf" "$OUT/agent.log" || fail "agent start"

vm_step "PSK and target"
key=$(sid nvme gen-tls-key --hostnqn="$HOSTNQN" --subsysnqn="$SUBNQN" --insert 2>&1) \
    || fail "nvme gen-tls-key: $key"
GOOD=$(echo "$key" | sed -n 's/^Inserted TLS key \([0-9a-f]*\)$/\1/p')
[ -n "$GOOD" ] || fail "no serial in: $key"
GOOD=$((0x$GOOD))
IDENTITY=$(sid keyctl rdescribe "$GOOD" | cut -d';' -f5-)
fact psk_identity "$IDENTITY"
truncate -s 16M "/run/$TAG.img"
nvmet_target_up "$PORT" "$SUBNQN" "$HOSTNQN" "/run/$TAG.img" || fail "nvmet target"
OPTS="transport=tcp,traddr=127.0.0.1,trsvcid=$PORT,nqn=$SUBNQN,hostnqn=$HOSTNQN,hostid=$HOSTID"
OPTS="$OPTS,nr_io_queues=1,tls,duplicate_connect"

# -- wrong PSK ------------------------------------------------------------------------------
vm_step "wrong_psk: the host's key"
# Same type and description as the target's key, other bytes, in the session keyring of a
# sleeping process: the agent (whose session keyring holds .nvme) cannot find it by search,
# so the target side keeps finding the right key; the host names it by serial (tls_key=).
head -c 32 /dev/urandom > "/tmp/$TAG.wrong"
( sid_exec keyctl session "$TAG-wrong" sh -c '
    k=$(keyctl padd psk "$1" @s < "$2") || exit 1
    keyctl setperm "$k" 0x3f3f0000 || exit 1
    echo "$k" > "$2.serial"
    exec sleep 600' sh "$IDENTITY" "/tmp/$TAG.wrong" ) > "$OUT/wrong-key.log" 2>&1 &
SLEEPER=$!
for _ in $(seq 100); do [ -s "/tmp/$TAG.wrong.serial" ] && break; sleep 0.1; done
WRONG=$(cat "/tmp/$TAG.wrong.serial" 2>/dev/null)
[ -n "$WRONG" ] || { cat "$OUT/wrong-key.log"; fail "could not make the wrong key"; }
fact wrong_psk_serials "good=$GOOD wrong=$WRONG"
[ "$(sid keyctl rdescribe "$WRONG" | cut -d';' -f5-)" = "$IDENTITY" ] || fail "wrong key's description"

vm_step "wrong_psk: connect"
a0=$(trace_count handshake_cmd_accept)
d0=$(( $(trace_count handshake_cmd_done) + $(trace_count handshake_cmd_done_err) ))
l0=$(request_lines | wc -l)
t0=$(vm_uptime)
"$PY" "$HERE/nvme_burst.py" --options "$OPTS,tls_key=$WRONG" --count 2 --json "$OUT/wrong_psk.json" \
    || fail "nvme_burst.py"
fact wrong_psk_s "$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $t0}")"
accepts=$(( $(trace_count handshake_cmd_accept) - a0 ))
wait_logged $((l0 + accepts)) 15
fact wrong_psk_burst "$(cat "$OUT/wrong_psk.json")"
fact wrong_psk_connected "$(controllers | wc -l)"
fact wrong_psk_accepts "$accepts"
fact wrong_psk_dones $(( $(trace_count handshake_cmd_done) + $(trace_count handshake_cmd_done_err) - d0 ))
fact wrong_psk_log_failed $(( $(count_lines failed) ))
fact wrong_psk_log_succeeded $(( $(count_lines succeeded) ))
fact wrong_psk_log_statuses "$(request_lines | sed -n 's/.*(status \([0-9]*\), \([A-Z]*\)).*/\2/p' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
request_lines
disconnect_all
kill "$SLEEPER" 2>/dev/null; SLEEPER=
# The agent linked .nvme into its session keyring at start-up; requests carrying .nvme as
# their keyring must not have unlinked it ("_ses: 1", not "_ses: empty", in /proc/keys).
fact session_keyrings "$(grep -E 'keyring +_ses:' /proc/keys | awk '{print $NF}' | tr '\n' ' ')"

# -- SIGTERM mid-burst ----------------------------------------------------------------------
vm_step "sigterm: burst"
# 30 ms more per packet on lo: a handshake lasts a few round trips, so some are in flight
# whenever the agent is stopped
if modprobe sch_netem && tc qdisc add dev lo root netem delay "${NETEM_MS:-30}ms"; then
    NETEM=1
    fact sigterm_netem_ms "${NETEM_MS:-30}"
fi
a0=$(trace_count handshake_cmd_accept)
d0=$(( $(trace_count handshake_cmd_done) + $(trace_count handshake_cmd_done_err) ))
l0=$(request_lines | wc -l)
ok0=$(count_lines succeeded)
# SIGTERM from a watcher on a tracefs instance of its own (reading its trace_pipe leaves
# the main buffer alone): at once after the TERM_AFTER-th ACCEPT of this phase, so that at
# least that handshake is in flight when the agent is told to stop
"$PY" - "$AGENT_PID" "$TERM_AFTER" > "$OUT/sigterm.watch" 2>&1 <<'PY' &
import os, signal, sys

inst = "/sys/kernel/tracing/instances/quichsd-sigterm"
os.makedirs(inst, exist_ok=True)
for event in ("handshake_cmd_accept", "handshake_cmd_done", "handshake_cmd_done_err"):
    with open(f"{inst}/events/handshake/{event}/enable", "w") as f:
        f.write("1")
pid, after = int(sys.argv[1]), int(sys.argv[2])
accepts = dones = 0
print("watching", flush=True)
with open(f"{inst}/trace_pipe") as pipe:
    for line in pipe:
        if ": handshake_cmd_accept:" in line:
            accepts += 1
            if accepts >= after:
                os.kill(pid, signal.SIGTERM)
                break
        elif ": handshake_cmd_done" in line:
            dones += 1
print(f"SIGTERM after ACCEPT {accepts}, DONE {dones}: {accepts - dones} in flight")
with open(f"{inst}/events/handshake/enable", "w") as f:
    f.write("0")
PY
WATCH_PID=$!
while ! grep -q watching "$OUT/sigterm.watch" && kill -0 "$WATCH_PID" 2>/dev/null; do sleep 0.1; done
"$PY" "$HERE/nvme_burst.py" --options "$OPTS,tls_key=$GOOD" --threads "$THREADS" --count "$BURST" \
    --stop-file "/tmp/$TAG.stop" --json "$OUT/sigterm.json" > "$OUT/sigterm.burst" 2>&1 &
BURST_PID=$!
vm_step "sigterm: SIGTERM"
# the watcher sent SIGTERM right after the TERM_AFTER-th ACCEPT: that request (at least) was
# in flight; if nothing came within 90 s, stop the agent anyway
n=900
while kill -0 "$WATCH_PID" 2>/dev/null && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
if kill -0 "$WATCH_PID" 2>/dev/null; then
    kill "$WATCH_PID"
    broken sigterm "no ACCEPT number $TERM_AFTER within 90 s"
    kill -TERM "$AGENT_PID"
fi
wait "$WATCH_PID"
WATCH_PID=
rmdir /sys/kernel/tracing/instances/quichsd-sigterm 2>/dev/null
fact sigterm_watch "$(tail -1 "$OUT/sigterm.watch")"
t0=$(vm_uptime)
wait "$AGENT_PID"
fact sigterm_agent_rc "$?"
fact sigterm_agent_exit_s "$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $t0}")"
AGENT_PID=
sleep 1   # connects after the stop: no agent, they fail at once
touch "/tmp/$TAG.stop"
[ -n "$NETEM" ] && tc qdisc del dev lo root && NETEM=
vm_step "sigterm: the consumers"
n=900
while kill -0 "$BURST_PID" 2>/dev/null && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
kill -0 "$BURST_PID" 2>/dev/null && broken sigterm "connects still blocked 90 s after the stop"
wait "$BURST_PID"
BURST_PID=
cat "$OUT/sigterm.burst"
fact sigterm_burst "$(cat "$OUT/sigterm.json" 2>/dev/null)"
accepts=$(( $(trace_count handshake_cmd_accept) - a0 ))
dones=$(( $(trace_count handshake_cmd_done) + $(trace_count handshake_cmd_done_err) - d0 ))
lines=$(( $(request_lines | wc -l) - l0 ))
fact sigterm_accepts "$accepts"
fact sigterm_dones "$dones"
fact sigterm_done_errs "$(trace_count handshake_cmd_done_err)"
fact sigterm_log_requests "$lines"
fact sigterm_log_succeeded $(( $(count_lines succeeded) - ok0 ))
fact sigterm_log_failed "$(request_lines | tail -n "$lines" | grep -c failed)"
# each request id exactly once in the whole log
fact log_ids_unique "$(request_lines | sed -n 's/.*request \([0-9]*\):.*/\1/p' | sort | uniq -d | wc -l | awk '{print ($1 == 0)}')"
fact log_max_id "$(request_lines | sed -n 's/.*request \([0-9]*\):.*/\1/p' | sort -n | tail -1)"
fact sigterm_log_tail "$(grep -E 'stopping|shutting down' "$OUT/agent.log" | tr '\n' '|')"
fact sigterm_daemon_inflight_at_stop "$(sed -n 's/.*stopping: no new requests; \([0-9]*\) in flight.*/\1/p' "$OUT/agent.log")"
fact sigterm_left_connected "$(controllers | wc -l)"
disconnect_all

vm_step "kernel's view"
trace_stop
trace_facts trace
grep ': handshake_\|hsdone' "$TRACEFS/trace" > "$OUT/handshake-events.txt"
echo "--- agent log"
cat "$OUT/agent.log"
vm_step "done"
[ -z "$BROKEN" ] || fail "broken:$BROKEN"
fact ok 1
