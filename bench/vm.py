# SPDX-License-Identifier: GPL-2.0-only
"""NVMe/TCP over TLS bursts on the real kernel: Debian's tlshd 1.4.0 against quichsd.

One VM boot (vm/run, sid's kernel under QEMU TCG, see vm/README.md) holds an nvmet port
with ``addr_tsas=tls1.3`` on 127.0.0.1 and a PSK from ``nvme gen-tls-key --insert``. In each
round every agent is started, warmed up with one connect, and then runs the same two bursts
of connect/disconnect with ``nr_io_queues=QUEUES`` (each connect: QUEUES+1 TCP connections,
a client and a server handshake each):

* ``seq``: one thread, SEQ connects one after the other;
* ``par``: THREADS threads, PAR connects in all, written straight to /dev/nvme-fabrics
  (nvme-cli 2.16 crashes when several ``nvme connect`` run at once).

Both go through tests/vm/scenarios/nvme_burst.py; handshakes are the kernel's ACCEPT count
(tracefs events/handshake) during the burst. The agents alternate which goes first from
round to round, so drifts of this noisy machine hit both alike. Everything under TCG is
slow; only the ratio of two agents measured in the same boot means something.

quichsd runs on sid's userland by default (``--userland sid``: the sid chroot's Python and
GnuTLS, the same as tlshd's, from the venv of vm/sid-venv), or on the host's (``host``: the
checkout's .venv, the host's GnuTLS). Each agent start is timed from the exec of the agent's
own program to its joining the ``tlshd`` multicast group, both stamps from the kernel's trace
clock (sched_process_exec and a kprobe on genl_bind; tests/vm/scenarios/agent.sh). On the
host, before the boot, quichsd's start-up up to its kernel probe (exec to the probe's "no
handshake family" answer on stderr, the host kernel having no such family) is timed for both
userlands. The host's load average is printed at the start and the end, with a warning when
it exceeded the number of cores (another VM or build competing: the ratios are then noisy).

    .venv/bin/python bench/vm.py [--userland sid|host] [--rounds 3] [--seq 8] [--par 16]
                                 [--threads 4] [--queues 2]

The last three lines, for the userland run: ``quichsd/tlshd ACCEPT->DONE median ratio: X.XX``
(per request, from the handshake tracepoints), ``quichsd/tlshd start-to-listen ratio: X.XX``
(medians of exec to join over the rounds) and ``quichsd/tlshd burst time ratio: X.XX``:
quichsd's total burst time over tlshd's (the same work for both; below 1 quichsd is faster).
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.vm.floor import USERLANDS, quichsd_command, sid_venv, userland  # noqa: E402
from tests.vm.rig import Rig, RigError, RigUnavailable, parse_facts  # noqa: E402

AGENTS = ("tlshd", "quichsd")

GUEST_SCRIPT = r"""#!/bin/sh
# written by bench/vm.py: the bench's guest part (see its docstring)
set -u
. "$VM_ROOT/vm/guest/lib.sh"
S=$VM_ROOT/tests/vm/scenarios
. "$S/handshake_trace.sh"
. "$S/agent.sh"
. "$S/nvmet.sh"
PY=$VM_ROOT/.venv/bin/python
PORT=4430
OUT=$VM_WORK/bench
mkdir -p "$OUT"
HOSTID=$(cat /proc/sys/kernel/random/uuid)
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$HOSTID
SUBNQN=nqn.2026-11.org.quichsd:bench
die() { echo "FAIL: $*" >&2; fact failed "$*"; exit 1; }
cleanup() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$SUBNQN" ] && echo 1 > "$c/delete_controller"
    done
    agent_stop
}
trap cleanup EXIT
trap 'exit 143' TERM INT

vm_step "setup"
sid_up
for m in tls nvme-tcp nvmet nvmet-tcp; do modprobe "$m" || die "modprobe $m"; done
trace_start || die "no tracefs handshake events"
key=$(sid nvme gen-tls-key --hostnqn="$HOSTNQN" --subsysnqn="$SUBNQN" --insert) || die "gen-tls-key"
PSK=$(echo "$key" | sed -n 's/^Inserted TLS key \([0-9a-f]*\)$/\1/p')
PSK=$((0x$PSK))
truncate -s 16M /run/bench.img
nvmet_target_up "$PORT" "$SUBNQN" "$HOSTNQN" /run/bench.img || die "nvmet target"
OPTS="transport=tcp,traddr=127.0.0.1,trsvcid=$PORT,nqn=$SUBNQN,hostnqn=$HOSTNQN,hostid=$HOSTID"
OPTS="$OPTS,nr_io_queues=$QUEUES,tls,tls_key=$PSK,duplicate_connect"
printf '[debug]\nloglevel=0\n' > "$OUT/agent.conf"

# burst ROUND NAME MODE THREADS COUNT: the burst's handshake events land in trace-*.txt
burst() {
    : > "$TRACEFS/trace"
    "$PY" "$S/nvme_burst.py" --options "$OPTS" --threads "$4" --count "$5" \
        --json "$OUT/$1-$2-$3.json" > /dev/null || die "nvme_burst.py"
    grep ': handshake_' "$TRACEFS/trace" > "$OUT/trace-$1-$2-$3.txt"
    accepts=$(grep -c ': handshake_cmd_accept:' "$OUT/trace-$1-$2-$3.txt")
    ACCEPTS=$((ACCEPTS + accepts))
    DONES=$((DONES + $(grep -c ': handshake_cmd_done' "$OUT/trace-$1-$2-$3.txt")))
    fact "bench_$1_$2_$3" "$(sed "s/^{/{\"accepts\": $accepts, /" "$OUT/$1-$2-$3.json")"
}
ACCEPTS=0
DONES=0

r=1
while [ "$r" -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then order="tlshd quichsd"; else order="quichsd tlshd"; fi
    for name in $order; do
        vm_step "round $r: $name"
        if [ "$name" = tlshd ]; then AGENT=$TLSHD; else AGENT=$QUICHSD; fi
        agent_start "$OUT/agent.conf" "$OUT/$r-$name.log" || die "$name did not start"
        fact "join_${r}_$name" "${AGENT_EXEC_JOIN_S:--} $AGENT_JOIN_S"
        burst "$r" "$name" warmup 1 1
        burst "$r" "$name" seq 1 "$SEQ"
        burst "$r" "$name" par "$THREADS" "$PAR"
        agent_stop
    done
    r=$((r + 1))
done
vm_step "done"
fact trace_accepts "$ACCEPTS"
fact trace_dones "$DONES"
fact ok 1
"""


_EVENT = re.compile(r"\s(\d+\.\d+): handshake_(submit|cmd_accept|cmd_done|complete): req=(\w+)")


def request_latencies(trace: Path) -> dict[str, list[float]]:
    """Per request of a burst (tracefs events/handshake): the consumer's submit to the agent's
    ACCEPT ("pickup"), ACCEPT to DONE ("in the agent"), submit to completion ("total")."""
    seen: dict[str, dict[str, float]] = {}
    spans: dict[str, list[float]] = {"pickup": [], "agent": [], "total": []}

    def close(times: dict[str, float]) -> None:
        if {"submit", "cmd_accept", "cmd_done", "complete"} <= times.keys():
            spans["pickup"].append(times["cmd_accept"] - times["submit"])
            spans["agent"].append(times["cmd_done"] - times["cmd_accept"])
            spans["total"].append(times["complete"] - times["submit"])

    for line in trace.read_text().splitlines():
        match = _EVENT.search(line)
        if not match:
            continue
        stamp, event, req = float(match.group(1)), match.group(2), match.group(3)
        if event == "submit":  # a request object may be reused after the previous one ended
            if req in seen:
                close(seen.pop(req))
            seen[req] = {}
        seen.setdefault(req, {})[event] = stamp
        if event == "complete":
            close(seen.pop(req))
    return spans


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


#: Run by the host's or the chroot's Python: quichsd serve's start-up to its kernel probe, on a
#: kernel without the handshake family (exec to the "no handshake family" line on stderr),
#: and a bare interpreter's start for scale; medians of RUNS, in ms.
_PROBE_TIMER = r"""
import statistics, subprocess, sys, tempfile, time
runs, quichsd = int(sys.argv[1]), sys.argv[2]
with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
    conf.write("[debug]\nloglevel=0\n")
    conf.flush()
    probe, bare = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen([quichsd, "serve", "-s", "-c", conf.name], text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for line in proc.stderr:
            if "no handshake netlink family" in line:
                probe.append(time.monotonic() - t0)
                break
        proc.wait()
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.monotonic() - t0)
if len(probe) != runs:
    sys.exit("quichsd serve did not report a missing handshake family (a kernel with one?)")
print(f"{statistics.median(probe) * 1000:.0f} {statistics.median(bare) * 1000:.0f}")
"""


def host_startup(land: str, runs: int = 5) -> str:
    """quichsd's start-up on this host up to its kernel probe, on ``land``'s userland."""
    if land == "sid":
        cmd = [str(REPO / "vm" / "chroot-run"), "python", "-c", _PROBE_TIMER, str(runs)]
        cmd.append(f"{sid_venv()}/bin/quichsd")
    else:
        venv = str(REPO / ".venv")
        cmd = [f"{venv}/bin/python", "-c", _PROBE_TIMER, str(runs), f"{venv}/bin/quichsd"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        return f"not measured ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"
    probe, bare = proc.stdout.split()
    return f"exec to its kernel probe {probe} ms (median of {runs}; bare interpreter {bare} ms)"


def load_line(when: str) -> tuple[str, bool]:
    """The host's load average, and whether it exceeds the number of cores."""
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    line = f"host load average at {when}: {one:.2f} {five:.2f} {fifteen:.2f} ({cores} cores)"
    return line, max(one, five) > cores


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


@dataclass
class Totals:
    seconds: dict[str, float] = field(default_factory=lambda: {"seq": 0.0, "par": 0.0})
    spans: dict[str, list[float]] = field(
        default_factory=lambda: {"pickup": [], "agent": [], "total": []}
    )
    accepts: dict[str, int] = field(default_factory=lambda: {"seq": 0, "par": 0})
    connects: dict[str, int] = field(default_factory=lambda: {"seq": 0, "par": 0})
    failed: dict[str, int] = field(default_factory=lambda: {"seq": 0, "par": 0})
    #: exec to joining the tlshd group, per start (traced), and start to the join polled
    joins: list[float] = field(default_factory=list)
    joins_polled: list[float] = field(default_factory=list)

    @property
    def burst_seconds(self) -> float:
        return sum(self.seconds.values())

    def rate(self, mode: str | None = None) -> float:
        modes = [mode] if mode else list(self.seconds)
        seconds = sum(self.seconds[m] for m in modes)
        return sum(self.accepts[m] for m in modes) / seconds if seconds else 0.0


def _filled(command: str, work: Path) -> str:
    """An agent's command line with ``{work}``, ``{repo}`` and ``{venv}`` filled in."""
    return (
        command.replace("{work}", str(work))
        .replace("{repo}", str(REPO))
        .replace("{venv}", sid_venv())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq", type=int, default=8, help="connects in the one-thread burst")
    parser.add_argument("--par", type=int, default=16, help="connects in the parallel burst")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--queues", type=int, default=2, help="nr_io_queues per connect")
    parser.add_argument("--timeout", type=float, default=1500.0, help="VM limit, boot included")
    parser.add_argument(
        "--userland",
        choices=USERLANDS,
        default=userland(),
        help="quichsd's userland in the guest: sid (the chroot's Python and GnuTLS, as "
        "tlshd's; the default, or QUICHSD_VM_USERLAND) or host (the checkout's .venv)",
    )
    parser.add_argument(
        "--quichsd",
        default=None,
        metavar="CMD",
        help="quichsd's command line in the guest (default: the userland's quichsd serve): "
        "CONFIG becomes the config path, {repo} the repository and {work} the work folder "
        "(one path for host and guest), {venv} the sid venv's path in the chroot, a first word "
        "'sid' runs it in the sid chroot; e.g. to "
        "add --fork-per-request, or to run under bench/profile_agent.py",
    )
    parser.add_argument(
        "--against",
        default="tlshd",
        metavar="CMD",
        help="what runs in tlshd's place (default: tlshd), a command line as for --quichsd: "
        "e.g. another checkout's quichsd, for an A/B of two versions in one boot (the "
        "output still says tlshd for it)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the guest's output")
    args = parser.parse_args()
    start_load, busy = load_line("start")
    print(start_load, flush=True)
    quichsd = args.quichsd or quichsd_command(args.userland)

    rig = Rig()
    try:
        rig.prepare()
    except (RigUnavailable, RigError) as exc:
        print(f"bench/vm.py: the VM rig is not available: {exc}", file=sys.stderr)
        return 2
    work = rig.new_work()
    script = work / "bench.sh"
    script.write_text(GUEST_SCRIPT)
    script.chmod(0o755)
    env = {
        "ROUNDS": str(args.rounds),
        "SEQ": str(args.seq),
        "PAR": str(args.par),
        "THREADS": str(args.threads),
        "QUEUES": str(args.queues),
        "QUICHSD": _filled(quichsd, work),
        "TLSHD": _filled(args.against, work),
    }
    for land in USERLANDS:
        print(f"host, quichsd serve on the {land} userland: {host_startup(land)}", flush=True)
    print(
        f"bench/vm.py: quichsd on the {args.userland} userland ({quichsd}); "
        f"one boot, {args.rounds} rounds x (tlshd, quichsd); per agent and round: "
        f"{args.seq} sequential + {args.par} connects on {args.threads} threads, "
        f"nr_io_queues={args.queues} ({2 * (args.queues + 1)} handshakes a connect)",
        flush=True,
    )
    run = rig.run(script, env=env, timeout=args.timeout, work=work)
    if args.verbose:
        print(run.output)
    facts = parse_facts(run.output)
    if run.rc != 0 or facts.get("ok") != "1":
        print(run.output[-4000:])
        print(f"bench/vm.py: the guest part failed (exit {run.rc}); work folder {work}")
        return 1

    totals = {name: Totals() for name in AGENTS}
    for key, value in facts.items():
        parts = key.split("_")
        if len(parts) == 3 and parts[0] == "join" and parts[2] in totals:
            traced, polled = value.split()
            if traced != "-":
                totals[parts[2]].joins.append(float(traced))
            totals[parts[2]].joins_polled.append(float(polled))
            continue
        if len(parts) != 4 or parts[0] != "bench" or parts[3] == "warmup":
            continue
        round_no, name, mode = parts[1], parts[2], parts[3]
        data = json.loads(value)
        total = totals[name]
        total.seconds[mode] += data["seconds"]
        total.accepts[mode] += data["accepts"]
        total.connects[mode] += data["ok"]
        total.failed[mode] += data["failed"]
        trace = work / "bench" / f"trace-{round_no}-{name}-{mode}.txt"
        if trace.exists():
            for span, values in request_latencies(trace).items():
                total.spans[span] += values
        rate = data["accepts"] / data["seconds"] if data["seconds"] else 0.0
        print(
            f"  round {round_no} {name:8} {mode}: {data['accepts']:4d} handshakes in "
            f"{data['seconds']:6.2f} s = {rate:5.2f}/s; connects {data['ok']} ok, "
            f"{data['failed']} failed; connect median {data['connect_median_s']} s"
        )
    for name, total in totals.items():
        print(
            f"{name:8}: sequential {total.rate('seq'):5.2f} handshakes/s, "
            f"{args.threads} threads {total.rate('par'):5.2f} handshakes/s, "
            f"all {total.rate():5.2f}/s; burst time {total.burst_seconds:.1f} s; "
            f"failed connects {sum(total.failed.values())}"
        )
    print("per request, ms (median / p90), from the kernel's handshake tracepoints:")
    for name, total in totals.items():
        cells = [
            f"{label} {_ms(total.spans[span], 0.5)} / {_ms(total.spans[span], 0.9)}"
            for span, label in (
                ("pickup", "submit->ACCEPT"),
                ("agent", "ACCEPT->DONE"),
                ("total", "submit->complete"),
            )
        ]
        print(f"  {name:8}: " + "; ".join(cells) + f" ({len(total.spans['total'])} requests)")
    print("agent start, s (median; per round), exec to joining the tlshd group (traced):")
    for name, total in totals.items():
        rounds = " ".join(f"{j:.2f}" for j in total.joins) or "-"
        polled_s = _median(total.joins_polled)
        print(
            f"  {name:8}: {_median(total.joins) or 0:.2f} ({rounds}); start to the join polled "
            f"every 0.1 s: {polled_s or 0:.2f}"
        )
    boot = f"{run.boot_seconds:.1f}" if run.boot_seconds is not None else "?"
    print(
        f"VM: wall {run.wall_seconds:.1f} s, boot {boot} s; kernel ACCEPTs "
        f"{facts.get('trace_accepts')}, DONEs {facts.get('trace_dones')}; work folder {work}"
    )
    per_mode = [
        totals["quichsd"].seconds[m] / totals["tlshd"].seconds[m]
        for m in ("seq", "par")
        if totals["tlshd"].seconds[m]
    ]
    if per_mode:
        print(
            "quichsd/tlshd time ratio per burst kind: "
            + ", ".join(f"{m} {r:.2f}" for m, r in zip(("seq", "par"), per_mode, strict=False))
            + f" (mean {statistics.mean(per_mode):.2f})"
        )
    end_load, busy_end = load_line("end")
    print(end_load)
    if busy or busy_end:
        print(
            f"WARNING: the host's load average exceeded its {os.cpu_count()} cores: other work "
            "competed with the VM, so these figures are noisy (rerun on a quiet machine)"
        )
    quichsd_t, tlshd_t = totals["quichsd"], totals["tlshd"]
    print(f"userland of quichsd: {args.userland}")
    agent_ratio = _ratio(_median(quichsd_t.spans["agent"]), _median(tlshd_t.spans["agent"]))
    print(f"quichsd/tlshd ACCEPT->DONE median ratio: {agent_ratio}")
    print(
        "quichsd/tlshd start-to-listen ratio: "
        f"{_ratio(_median(quichsd_t.joins), _median(tlshd_t.joins))}"
    )
    ratio = quichsd_t.burst_seconds / tlshd_t.burst_seconds
    print(f"quichsd/tlshd burst time ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
