# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=sh
# Sourced by scenario scripts (not a scenario itself): start and stop the handshake agent so
# that only the agent under test answers the kernel.
#
# AGENT: "tlshd" (Debian sid's, run in the chroot), or a command line in which the word
#   CONFIG becomes the configuration file's path: run from the guest root (the host's
#   userland), or in the sid chroot when its first word is "sid" (sid's userland, e.g.
#   "sid /opt/quichsd/venv-KEY/bin/quichsd serve -s -c CONFIG": quichsd from the sid venv,
#   see vm/sid-venv and sid_up in vm/guest/lib.sh).
# agent_start CONF LOG   starts it, waits until it joined the tlshd group, checks that every
#                        listener of the group is the agent or one of its workers; sets
#                        AGENT_PID, AGENT_JOIN_S (polled: start to the join seen in
#                        /proc/net/netlink, 0.1 s steps) and AGENT_EXEC_JOIN_S (traced, see
#                        below; empty if not measurable); facts agent_join_s,
#                        agent_exec_join_s, agent_comm, listeners
# agent_stop             TERM (then KILL), waits until nobody listens on the group
#
# Exec to join, traced: a tracefs instance of its own ("agentjoin", so the scenarios' handshake
# trace is left alone) records sched_process_exec and a kprobe on genl_bind, which the kernel
# calls when a generic-netlink socket joins a multicast group (with the group's id); both
# stamps come from one trace clock. AGENT_EXEC_JOIN_S is the time from the last exec of
# AGENT_PID (the agent's own program, after chroot/env) to the first join of the tlshd group.
AGENT=${AGENT:-tlshd}
AGENT_PID=
AGENT_JOIN_S=
AGENT_EXEC_JOIN_S=
_JOIN_TRACE=/sys/kernel/tracing/instances/agentjoin

# join_trace_up: the instance and its events (once per boot); false if tracefs lacks them.
join_trace_up() {
    _tr=/sys/kernel/tracing
    [ -d "$_tr/instances" ] && [ -d "$_tr/events/sched/sched_process_exec" ] || return 1
    [ -d "$_JOIN_TRACE" ] || mkdir "$_JOIN_TRACE" || return 1
    if [ ! -d "$_tr/events/agentjoin" ]; then
        awk '$3 == "genl_bind" { f = 1; exit } END { exit !f }' /proc/kallsyms || return 1
        echo "p:agentjoin/genl_bind genl_bind group=%si:s32" >> "$_tr/kprobe_events" || return 1
    fi
    echo 1 > "$_JOIN_TRACE/events/agentjoin/enable" || return 1
    echo 1 > "$_JOIN_TRACE/events/sched/sched_process_exec/enable" || return 1
}

# exec_join_seconds PID GROUP: from the join trace, PID's last exec before GROUP's first join.
exec_join_seconds() {
    awk -v pid="$1" -v group="$2" '
        / sched_process_exec: / && !joined {
            for (i = 1; i <= NF; i++) if ($i == "pid=" pid) { t = $0; sub(/: sched_process_exec:.*/, "", t); n = split(t, a, " "); exec = a[n] }
        }
        / genl_bind: / && !joined && $NF == "group=" group {
            t = $0; sub(/: genl_bind:.*/, "", t); n = split(t, a, " "); joined = a[n]
        }
        END { if (exec != "" && joined != "") printf "%.3f\n", joined - exec }
    ' "$_JOIN_TRACE/trace"
}

agent_start() {
    agent_joined && { echo "an agent already listens on the tlshd group" >&2; return 1; }
    _traced=
    if join_trace_up; then : > "$_JOIN_TRACE/trace"; _traced=1; fi
    _t0=$(vm_uptime)
    if [ "$AGENT" = tlshd ]; then
        ( sid_exec tlshd -s -c "$1" ) > "$2" 2>&1 &
    else
        # shellcheck disable=SC2086  # AGENT is a command line
        set -- "$1" "$2" $AGENT
        _conf=$1 _log=$2
        shift 2
        _in_sid=
        [ "$1" = sid ] && { _in_sid=1; shift; sid_up; }
        _cmd=
        for _w in "$@"; do [ "$_w" = CONFIG ] && _w=$_conf; _cmd="$_cmd $_w"; done
        # shellcheck disable=SC2086
        if [ -n "$_in_sid" ]; then
            ( sid_exec $_cmd ) > "$_log" 2>&1 &
        else
            ( exec $_cmd ) > "$_log" 2>&1 &
        fi
    fi
    AGENT_PID=$!
    wait_agent_joined "${AGENT_JOIN_TIMEOUT:-120}" "$AGENT_PID" || {
        echo "the agent did not join the tlshd group" >&2
        return 1
    }
    AGENT_JOIN_S=$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $_t0}")
    fact agent_join_s "$AGENT_JOIN_S"
    AGENT_EXEC_JOIN_S=
    [ -n "$_traced" ] && AGENT_EXEC_JOIN_S=$(exec_join_seconds "$AGENT_PID" "$(($(handshake_group_id)))")
    fact agent_exec_join_s "$AGENT_EXEC_JOIN_S"
    fact agent_comm "$(cat "/proc/$AGENT_PID/comm" 2>/dev/null)"
    _listeners=$(group_listener_pids | tr '\n' ' ')
    fact listeners "$_listeners"
    for _p in $_listeners; do
        descends "$_p" "$AGENT_PID" || {
            echo "tlshd-group listener $_p ($(cat "/proc/$_p/comm")) is not our agent $AGENT_PID" >&2
            return 1
        }
    done
}

agent_stop() {
    [ -n "$AGENT_PID" ] || return 0
    kill "$AGENT_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        kill -0 "$AGENT_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$AGENT_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do agent_joined || break; sleep 0.2; done
    agent_joined && echo "WARNING: something still listens on the tlshd group" >&2
    AGENT_PID=
}
