# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=sh
# Sourced by scenario scripts (not a scenario itself): the kernel's view of the handshakes.
#
# trace_start   clears the trace buffer and enables tracefs events/handshake (ACCEPT, DONE,
#               complete, cancel, ...) plus kprobes on the consumers' completion callbacks,
#               whose arguments are the DONE's status and first REMOTE_AUTH as the consumer
#               sees them: `hsdone/<consumer> status=<-errno> peerid=<serial>`:
#                 nvme_host   nvme_tcp_tls_done(data, status, pskid)           (nvme-tcp)
#                 nvmet       nvmet_tcp_tls_handshake_done(data, status, peerid) (nvmet-tcp)
#                 rpc_client  xs_tls_handshake_done(data, status, peerid)      (sunrpc client)
#                 knfsd       svc_tcp_handshake_done(data, status, peerid)     (sunrpc server)
#               Modules must be loaded first (a kprobe needs the symbol in /proc/kallsyms).
# trace_count EVENT        how many EVENT lines the buffer holds (e.g. handshake_cmd_accept)
# trace_lines EVENT        those lines
# trace_stop               disables the events (the buffer is kept for trace_count)
# trace_facts PREFIX       "@@ PREFIX_<event> N" for the usual events, and the kprobe lines
TRACEFS=/sys/kernel/tracing
_TRACE_PROBES="nvme_host:nvme_tcp_tls_done nvmet:nvmet_tcp_tls_handshake_done
rpc_client:xs_tls_handshake_done knfsd:svc_tcp_handshake_done"

trace_available() { [ -d "$TRACEFS/events/handshake" ]; }

trace_start() {
    trace_available || return 1
    echo 0 > "$TRACEFS/tracing_on"
    [ -d "$TRACEFS/events/hsdone" ] && echo 0 > "$TRACEFS/events/hsdone/enable"
    # remove our kprobes from an earlier scenario of the same boot, keep anybody else's
    for _p in $_TRACE_PROBES; do
        [ -d "$TRACEFS/events/hsdone/${_p%%:*}" ] && echo "-:hsdone/${_p%%:*}" >> "$TRACEFS/kprobe_events"
    done
    echo 8192 > "$TRACEFS/buffer_size_kb"
    : > "$TRACEFS/trace"
    for _p in $_TRACE_PROBES; do
        _sym=${_p#*:}
        awk -v s="$_sym" '$3 == s { f = 1; exit } END { exit !f }' /proc/kallsyms || continue
        echo "p:hsdone/${_p%%:*} $_sym status=%si:s32 peerid=%dx:x32" >> "$TRACEFS/kprobe_events" \
            || echo "trace: no kprobe on $_sym" >&2
    done
    echo 1 > "$TRACEFS/events/handshake/enable"
    [ -d "$TRACEFS/events/hsdone" ] && echo 1 > "$TRACEFS/events/hsdone/enable"
    echo 1 > "$TRACEFS/tracing_on"
}

trace_stop() {
    trace_available || return 0
    echo 0 > "$TRACEFS/events/handshake/enable"
    [ -d "$TRACEFS/events/hsdone" ] && echo 0 > "$TRACEFS/events/hsdone/enable"
}

trace_lines() { grep ": $1:" "$TRACEFS/trace" 2>/dev/null; }
trace_count() { grep -c ": $1:" "$TRACEFS/trace" 2>/dev/null || true; }

# trace_facts PREFIX: counts of the events that matter for "every ACCEPT got its DONE".
trace_facts() {
    for _e in handshake_submit handshake_submit_err handshake_cmd_accept handshake_cmd_accept_err \
              handshake_cmd_done handshake_cmd_done_err handshake_complete handshake_cancel \
              handshake_cancel_none handshake_cancel_busy handshake_destruct handshake_notify_err; do
        fact "${1}_${_e#handshake_}" "$(trace_count "$_e")"
    done
    for _p in $_TRACE_PROBES; do
        fact "${1}_done_${_p%%:*}" "$(trace_lines "${_p%%:*}" | sed 's/.*status=\(-*[0-9]*\) peerid=\(0x[0-9a-f]*\).*/\1:\2/' | tr '\n' ' ')"
    done
}
