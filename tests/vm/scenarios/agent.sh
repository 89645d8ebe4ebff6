# shellcheck shell=sh
# Sourced by scenario scripts (not a scenario itself): start and stop the handshake agent the
# way nvme_tls_psk.sh does, so that only the agent under test answers the kernel.
#
# AGENT: "tlshd" (Debian sid's, run in the chroot) or a command line run from the guest root
#   in which the word CONFIG becomes the configuration file's path.
# agent_start CONF LOG   starts it, waits until it joined the tlshd group, checks that every
#                        listener of the group is the agent or one of its workers; sets
#                        AGENT_PID; facts agent_join_s, agent_comm
# agent_stop             TERM (then KILL), waits until nobody listens on the group
AGENT=${AGENT:-tlshd}
AGENT_PID=

agent_start() {
    agent_joined && { echo "an agent already listens on the tlshd group" >&2; return 1; }
    if [ "$AGENT" = tlshd ]; then
        ( sid_exec tlshd -s -c "$1" ) > "$2" 2>&1 &
    else
        # shellcheck disable=SC2086  # AGENT is a command line
        set -- "$1" "$2" $AGENT
        _conf=$1 _log=$2
        shift 2
        _cmd=
        for _w in "$@"; do [ "$_w" = CONFIG ] && _w=$_conf; _cmd="$_cmd $_w"; done
        # shellcheck disable=SC2086
        ( exec $_cmd ) > "$_log" 2>&1 &
    fi
    AGENT_PID=$!
    _t0=$(vm_uptime)
    wait_agent_joined "${AGENT_JOIN_TIMEOUT:-120}" "$AGENT_PID" || {
        echo "the agent did not join the tlshd group" >&2
        return 1
    }
    fact agent_join_s "$(awk "BEGIN{printf \"%.2f\", $(vm_uptime) - $_t0}")"
    fact agent_comm "$(cat "/proc/$AGENT_PID/comm" 2>/dev/null)"
    for _p in $(group_listener_pids); do
        descends "$_p" "$AGENT_PID" || {
            echo "tlshd-group listener $_p ($(cat "/proc/$_p/comm")) is not our agent" >&2
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
