# SPDX-License-Identifier: GPL-2.0-only
"""Metrics, the status socket and ``quichsd status``: units, the OpenMetrics exposition (written
by prometheus_client from our collector; checked by rule and by its OpenMetrics parser), and the
running daemon's counts."""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import re
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ops_support import statuses, write_pki, x509_config, x509_pair
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from quichsd.cli import main as cli_main
from quichsd.daemon.metrics import DEFAULT_BUCKETS, Histogram, Metrics
from quichsd.daemon.metrics_openmetrics import render_openmetrics
from quichsd.daemon.metrics_table import quantile, render_table
from quichsd.daemon.status import StatusServer, StatusUnavailable, query, query_snapshot
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig

# -- Metrics -------------------------------------------------------------------------------------


def test_histogram_is_cumulative_and_ends_at_inf() -> None:
    h = Histogram((0.01, 0.1, 1.0), created=0.0)
    for value in (0.005, 0.01, 0.05, 0.5, 7.0, -1.0):
        h.observe(value)
    assert h.cumulative() == [(0.01, 3), (0.1, 4), (1.0, 5), (math.inf, 6)]
    assert h.total == 6 and h.sum == pytest.approx(7.565)


def test_metrics_counts_by_outcome_errno_and_latency() -> None:
    clock = iter(float(t) for t in range(100, 200))
    m = Metrics(buckets=(0.01, 1.0), clock=lambda: next(clock))
    m.observe("quic", "client", 0, 0.002)
    m.observe("quic", "client", 0, 0.5)
    m.observe("quic", "server", errno.ETIMEDOUT, 30.0)
    m.observe("?", "?", errno.EINVAL, 0.0)  # refused before the transport was known
    d = m.as_dict()
    assert [(h["transport"], h["role"], h["outcome"], h["count"]) for h in d["handshakes"]] == [
        ("quic", "client", "success", 2),
        ("quic", "server", "failure", 1),
        ("unknown", "unknown", "failure", 1),
    ]
    assert [(f["role"], f["errno"], f["count"]) for f in d["failures"]] == [
        ("server", "ETIMEDOUT", 1),
        ("unknown", "EINVAL", 1),
    ]
    client = d["latency"][0]
    assert client["buckets"] == [["0.01", 1], ["1.0", 2], ["+Inf", 2]]
    assert quantile(client["buckets"], 0.5) == 0.01 and quantile(client["buckets"], 1.0) == 1.0
    with pytest.raises(ValueError):
        Metrics(buckets=(1.0, 0.5))


def test_bucket_bounds_are_written_as_openmetrics_reads_them() -> None:
    """``le`` in the snapshot is the exposition's text, and reads back as the bound."""
    m = Metrics(clock=lambda: 0.0)
    m.observe("tcp", "server", 0, 0.003)
    buckets = m.as_dict()["latency"][0]["buckets"]
    assert [b for b, _ in buckets][:3] == ["0.001", "0.0025", "0.005"]
    assert [float(b) for b, _ in buckets] == [*DEFAULT_BUCKETS, math.inf]


def _snapshot() -> dict[str, Any]:
    m = Metrics(clock=lambda: 1_800_000_000.25)
    m.observe("quic", "client", 0, 0.004)
    m.observe("quic", "client", errno.EACCES, 0.2)
    m.observe("quic", "server", 0, 0.03)
    m.reloaded()
    return {
        "format": 1,
        "pid": 1234,
        "versions": {"quichsd": "0.1.0", "gnutls": 'odd "3.7.9"\\\n'},
        "now": 1_800_000_100.0,
        "config": {"path": "/etc/tlshd/config", "generation": 1},
        "requests": {
            "accepted": 3,
            "done": 3,
            "done_failed": 0,
            "late_outcomes": 0,
            "in_flight": 0,
        },
        "pool": {
            "mode": "pre-forked",
            "size": 2,
            "workers": 2,
            "in_flight": 0,
            "concurrency": 64,
            "capacity": 128,
            "spawned": 3,
            "deaths": 1,
            "recycled": 0,
        },
        **m.as_dict(),
    }


_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (?P<value>\S+)$'
)


def check_openmetrics(text: str) -> dict[str, str]:
    """The text-format rules we rely on; returns family name → type."""
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert "\r" not in text and "\n\n" not in text
    families: dict[str, str] = {}
    meta: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines()[:-1]:
        if line.startswith("#"):
            kind, name = line.split(" ")[1:3]
            assert kind in ("TYPE", "UNIT", "HELP"), line
            if name != current:
                assert name not in meta, f"{name}: metadata apart from its family"
                current = name
            meta.setdefault(name, []).append(kind)
            assert meta[name].count(kind) == 1, f"{name}: two {kind} lines"
            if kind == "TYPE":
                families[name] = line.split(" ")[3]
            if kind == "UNIT":
                assert name.endswith("_" + line.split(" ")[3])
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, value = match["name"], match["value"]
        kind = families[current]
        suffixes = {
            "counter": ("_total", "_created"),
            "gauge": ("",),
            "info": ("_info",),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
        }[kind]
        assert any(name == current + s for s in suffixes), f"{name} in {kind} {current}"
        if name.endswith(("_total", "_count", "_bucket", "_info")):
            assert float(value).is_integer() and float(value) >= 0, f"{line}: counts are whole"
    return families


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample, as prometheus_client's OpenMetrics parser reads it."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _histogram_series(text: str, name: str) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(transport, role) → [(le, count)] in exposition order."""
    series: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                key = (s.labels["transport"], s.labels["role"])
                series.setdefault(key, []).append((s.labels["le"], int(s.value)))
    return series


def test_openmetrics_exposition_rules() -> None:
    text = render_openmetrics(_snapshot())
    families = check_openmetrics(text)
    assert families["quichsd_handshakes"] == "counter"
    assert families["quichsd_handshake_duration_seconds"] == "histogram"
    assert families["quichsd_build"] == "info"
    assert "# UNIT quichsd_handshake_duration_seconds seconds" in text
    got = samples(text)
    quic_client = {"transport": "quic", "role": "client"}
    assert sample(got, "quichsd_handshakes_total", **quic_client, outcome="failure") == 1
    assert sample(got, "quichsd_handshake_failures_total", **quic_client, errno="EACCES") == 1
    assert sample(got, "quichsd_handshakes_created", **quic_client, outcome="failure") == (
        1_800_000_000.25
    )
    assert 'gnutls="odd \\"3.7.9\\"\\\\\\n"' in text  # escaped: \" \\ \n
    assert sample(got, "quichsd_build_info", version="0.1.0", gnutls='odd "3.7.9"\\\n') == 1
    name = "quichsd_handshake_duration_seconds"
    series = _histogram_series(text, name)
    assert set(series) == {("quic", "client"), ("quic", "server")}
    for (transport, role), buckets in series.items():
        bounds = [float(b) for b, _ in buckets]
        counts = [c for _, c in buckets]
        assert bounds == [*DEFAULT_BUCKETS, math.inf]
        assert counts == sorted(counts), "buckets are cumulative"
        labels = {"transport": transport, "role": role}
        assert sample(got, f"{name}_count", **labels) == counts[-1]
        assert sample(got, f"{name}_created", **labels) == 1_800_000_000.25
    assert sample(got, f"{name}_sum", **quic_client) == pytest.approx(0.204)


def test_openmetrics_parses_with_prometheus_client() -> None:
    families = {f.name: f for f in text_string_to_metric_families(render_openmetrics(_snapshot()))}
    handshakes = families["quichsd_handshakes"]
    assert handshakes.type == "counter"
    totals = {
        (s.labels["role"], s.labels["outcome"]): s.value
        for s in handshakes.samples
        if s.name == "quichsd_handshakes_total"
    }
    assert totals == {("client", "success"): 1, ("client", "failure"): 1, ("server", "success"): 1}
    histogram = families["quichsd_handshake_duration_seconds"]
    assert histogram.type == "histogram" and histogram.unit == "seconds"
    counts = {s.labels["role"]: s.value for s in histogram.samples if s.name.endswith("_count")}
    assert counts == {"client": 2, "server": 1}
    assert families["quichsd_workers"].samples[0].value == 2
    assert set(families) == {
        "quichsd_build",
        "quichsd_start_time_seconds",
        "quichsd_requests_accepted",
        "quichsd_dones",
        "quichsd_done_errors",
        "quichsd_late_outcomes",
        "quichsd_config_reloads",
        "quichsd_requests_in_flight",
        "quichsd_handshakes",
        "quichsd_handshake_failures",
        "quichsd_handshake_duration_seconds",
        "quichsd_workers",
        "quichsd_worker_jobs_in_flight",
        "quichsd_pool_capacity",
        "quichsd_workers_spawned",
        "quichsd_worker_deaths",
        "quichsd_workers_recycled",
    }


def test_table_for_people() -> None:
    text = render_table(_snapshot())
    assert "pid 1234, up 1m39s" in text
    assert re.search(r"quic\s+client\s+1\s+1\s+102\.0 ms", text), text
    assert re.search(r"quic\s+client\s+EACCES\s+1", text), text
    assert re.search(r"2/2\s+0\s+128\s+3\s+1\s+0", text), text


# -- the status socket -------------------------------------------------------------------------


def _serve(
    path: Path, body: Callable[[], Any], client: Callable[[], Any], explicit: bool = True
) -> Any:
    async def run() -> Any:
        server = await StatusServer.start(path, body, explicit=explicit)
        try:
            return server, await asyncio.get_running_loop().run_in_executor(None, client)
        finally:
            if server is not None:
                await server.close()

    return asyncio.run(run())


def test_status_socket_answers_and_is_root_only(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.sock"

    def client() -> tuple[int, int, str, str, dict[str, Any]]:
        mode = os.stat(path).st_mode
        return (
            stat.S_IMODE(mode),
            stat.S_IMODE(os.stat(path.parent).st_mode),
            query(path, "openmetrics"),
            query(path, "json"),
            query_snapshot(path),
        )

    server, (mode, dir_mode, metrics, raw, snap) = _serve(path, _snapshot, client)
    assert server is not None and server.served == 3
    assert (mode, dir_mode) == (0o600, 0o700)
    assert metrics == render_openmetrics(_snapshot())
    assert json.loads(raw) == snap == json.loads(json.dumps(_snapshot()))
    assert not path.exists(), "the socket is removed on close"


def test_status_socket_refuses_unknown_requests(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"

    def client() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(b"secrets\n")
            return s.recv(4096)

    _server, answer = _serve(path, _snapshot, client)
    assert answer.startswith(b"error: unknown request")


def test_status_socket_setup(tmp_path: Path) -> None:
    # A stale socket file (its daemon died) is replaced.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    server, pid = _serve(stale, _snapshot, lambda: query_snapshot(stale)["pid"])
    assert server is not None and pid == 1234
    # The default location is used only where its directory exists (RuntimeDirectory=).
    missing = tmp_path / "nodir" / "status.sock"
    server, _ = _serve(missing, _snapshot, lambda: None, explicit=False)
    assert server is None and not missing.parent.exists()
    # A live daemon's socket is left alone.
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(live))
        s.listen(1)
        server, _ = _serve(live, _snapshot, lambda: None)
    assert server is None
    # Not a socket: left alone.
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    server, _ = _serve(plain, _snapshot, lambda: None)
    assert server is None and plain.read_text() == "keep me"


def test_status_client_errors(tmp_path: Path) -> None:
    with pytest.raises(StatusUnavailable, match="no status socket"):
        query(tmp_path / "absent.sock")
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(dead))
    with pytest.raises(StatusUnavailable, match="nobody listens"):
        query(dead)


# -- the running daemon ------------------------------------------------------------------------


def test_status_of_a_running_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = write_pki(tmp_path)
    status_socket = tmp_path / "quichsd" / "status.sock"
    config = x509_config(pki, extra=f"status_socket={status_socket}\n")
    with DaemonRig(config) as rig, ModelQuicListener(alpn=["echo"]) as quic:
        for _ in range(2):
            assert statuses(*x509_pair(rig, quic)) == [0, 0], rig.log()
        refused = rig.client_request(quic.address, "psk")  # no identity: ENOKEY at once
        assert statuses(refused) == [errno.ENOKEY]
        rig.check_invariants()

        assert stat.S_IMODE(os.stat(status_socket).st_mode) == 0o600
        snap = query_snapshot(status_socket)
        assert snap["pid"] == rig.pid
        assert snap["requests"] == {
            "accepted": 5,
            "done": 5,
            "done_failed": 0,
            "late_outcomes": 0,
            "in_flight": 0,
        }
        # One worker at idle (the pool grows with load): up to 2, as configured.
        assert snap["pool"]["workers"] == 1 and snap["pool"]["spawned"] == 1
        assert snap["pool"]["size"] == 2 and snap["pool"]["shrunk"] == 0
        assert snap["pool"]["deaths"] == 0 and snap["pool"]["capacity"] == 64

        assert cli_main(["status", "--socket", str(status_socket)]) == 0
        table = capsys.readouterr().out
        assert re.search(r"quic\s+client\s+2\s+1\s", table), table
        assert re.search(r"quic\s+server\s+2\s+0\s", table), table
        assert re.search(r"quic\s+client\s+ENOKEY\s+1", table), table

        assert cli_main(["status", "--socket", str(status_socket), "--openmetrics"]) == 0
        text = capsys.readouterr().out
        check_openmetrics(text)
        got = samples(text)
        quic = {"transport": "quic"}
        for name, labels, value in (
            ("quichsd_handshakes_total", {"role": "client", "outcome": "success"}, 2),
            ("quichsd_handshakes_total", {"role": "server", "outcome": "success"}, 2),
            ("quichsd_handshakes_total", {"role": "client", "outcome": "failure"}, 1),
            ("quichsd_handshake_failures_total", {"role": "client", "errno": "ENOKEY"}, 1),
            ("quichsd_handshake_duration_seconds_count", {"role": "server"}, 2),
            ("quichsd_handshake_duration_seconds_bucket", {"role": "client", "le": "+Inf"}, 3),
            ("quichsd_requests_accepted_total", {}, 5),
            ("quichsd_workers", {}, 1),
            ("quichsd_workers_spawned_total", {}, 1),
            ("quichsd_worker_deaths_total", {}, 0),
        ):
            labels = {**quic, **labels} if labels else {}
            assert sample(got, name, **labels) == value, (name, labels)
        assert rig.stop() == 0
    assert not status_socket.exists(), "the daemon removes its socket when it stops"
    assert cli_main(["status", "--socket", str(status_socket)]) == 1
    assert "no status socket" in capsys.readouterr().err
