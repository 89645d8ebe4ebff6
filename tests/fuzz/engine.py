# SPDX-License-Identifier: GPL-2.0-only
"""The engine's receive(), per role and per encryption level, on a real engine pair.

Every execution runs a real client and server in memory up to the point where the
*victim* would receive the peer's bytes at the target level, then hands it the
fuzzed bytes instead.  Input layout::

    byte 0   scenario: X.509 with ALPN and tickets, mutual X.509, or PSK
    byte 1   bit 0: 0 = XOR the body onto the live flight (an empty body delivers
             it unchanged, so the honest handshake is one input away), 1 = the body
             replaces the flight; bits 1-7: where to split it in two receives
    rest     the body

``receive()`` documents no exception for a peer's bytes: every outcome is a list of
events (a failure is ``HandshakeFailed``).  So nothing is expected, and invariants
on the events are checked after every call (``check_events``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from fuzz.harness import Target
from quichsd.tls import (
    AuthMode,
    CertificateCredentials,
    CertificateRequest,
    EngineConfig,
    HandshakeComplete,
    HandshakeEngine,
    HandshakeFailed,
    Level,
    PskClientCredentials,
    Role,
    SendHandshake,
    State,
    new_ticket_key,
)
from quichsd.tls.events import Event
from quichsd.tls.selfsigned import issue, make_ca

SERVER_NAME = "server.test"
PSK_IDENTITY = b"fuzz-identity"
PSK_KEY = bytes(range(32))
CLIENT_TP = b"\x01\x04\x80\x00\x75\x30"  # max_idle_timeout 30000
SERVER_TP = b"\x01\x04\x80\x00\x75\x30\x03\x02\x45\xc0"
_LIVE = (State.HANDSHAKING, State.COMPLETE)


@dataclass(frozen=True)
class Scenario:
    client: EngineConfig
    server: EngineConfig


@functools.cache
def scenarios() -> tuple[Scenario, ...]:
    """Built once per process: key generation dwarfs a handshake."""
    ca = make_ca("quichsd fuzz CA")
    server_leaf = issue(ca, (SERVER_NAME,))
    client_leaf = issue(ca, ("client.test",))
    server_creds = CertificateCredentials(
        chain=server_leaf.cert_pem, key=server_leaf.key_pem, trust=ca.cert_pem
    )
    client_creds = CertificateCredentials(
        chain=client_leaf.cert_pem, key=client_leaf.key_pem, trust=ca.cert_pem
    )
    trust = CertificateCredentials(trust=ca.cert_pem)
    alpn = (b"h3", b"smb")
    x509 = Scenario(
        EngineConfig(
            role=Role.CLIENT, auth=AuthMode.X509, certificates=trust,
            peer_name=SERVER_NAME, alpn=alpn,
        ),
        EngineConfig(
            role=Role.SERVER, auth=AuthMode.X509, certificates=server_creds,
            alpn=alpn[1:], ticket_key=new_ticket_key(),
        ),
    )  # fmt: skip
    mutual = Scenario(
        EngineConfig(
            role=Role.CLIENT, auth=AuthMode.X509, certificates=client_creds,
            peer_name=SERVER_NAME,
        ),
        EngineConfig(
            role=Role.SERVER, auth=AuthMode.X509, certificates=server_creds,
            certificate_request=CertificateRequest.REQUIRE,
        ),
    )  # fmt: skip
    psk = Scenario(
        EngineConfig(
            role=Role.CLIENT, auth=AuthMode.PSK, psk=PskClientCredentials(PSK_IDENTITY, PSK_KEY)
        ),
        EngineConfig(
            role=Role.SERVER, auth=AuthMode.PSK,
            psk_lookup=lambda identity: PSK_KEY if identity == PSK_IDENTITY else None,
        ),
    )  # fmt: skip
    return (x509, mutual, psk)


def check_events(engine: HandshakeEngine, level: int, events: list[Event]) -> None:
    """What every receive() promises its caller, whatever the peer sent."""
    failures = [e for e in events if type(e) is HandshakeFailed]
    if failures:
        failed = failures[0]
        assert len(failures) == 1 and events[-1] is failed, f"failure not last: {events}"
        assert failed.errno > 0, failed
        assert failed.alert is None or 0 <= failed.alert <= 255, failed
        ticket = engine.config.role is Role.CLIENT and level == Level.APP
        # A refused NewSessionTicket leaves a finished handshake finished (engine.py).
        assert engine.state is State.FAILED or (ticket and engine.state is State.COMPLETE)
    else:
        assert engine.state is not State.FAILED, f"failed without HandshakeFailed: {events}"
    if any(type(e) is HandshakeComplete for e in events):
        assert engine.state is State.COMPLETE, engine.state
    for event in events:
        if type(event) is SendHandshake:
            assert event.data and event.level in (Level.INITIAL, Level.HANDSHAKE, Level.APP)


def _flights(events: list[Event]) -> list[tuple[int, bytes]]:
    """SendHandshake events merged per level, in order (one flight per level)."""
    merged: list[tuple[int, bytes]] = []
    for event in events:
        if type(event) is SendHandshake:
            if merged and merged[-1][0] == event.level:
                merged[-1] = (event.level, merged[-1][1] + event.data)
            else:
                merged.append((event.level, event.data))
    return merged


def _deliver(engine: HandshakeEngine, level: int, data: bytes, split: int) -> None:
    parts = [data[:split], data[split:]] if 0 < split < len(data) else [data]
    for part in parts:
        if engine.state not in _LIVE or not part:
            return
        if engine.state is State.COMPLETE and (
            level != Level.APP or engine.config.role is Role.SERVER
        ):
            return  # receive() would say EngineStateError: the caller's rule, not the peer's
        check_events(engine, level, engine.receive(level, part))


def _xor(live: bytes, body: bytes) -> bytes:
    out = bytearray(max(len(live), len(body)))
    out[: len(live)] = live
    for index, byte in enumerate(body):
        out[index] ^= byte
    return bytes(out)


@dataclass(frozen=True)
class Stage:
    """Where the fuzzed bytes go: ``victim`` receives them instead of its peer's
    flight at ``intercept``, delivered at ``deliver`` (the same level but for the
    wrong-level targets)."""

    victim: Role
    intercept: int
    deliver: tuple[int, ...]

    def run(self, data: bytes) -> None:
        if len(data) < 2:
            return
        scenario = scenarios()[data[0] % 3]
        replace, split, body = data[1] & 1, data[1] >> 1, data[2:]
        level = self.deliver[split % len(self.deliver)]
        client = HandshakeEngine(scenario.client, CLIENT_TP)
        server = HandshakeEngine(scenario.server, SERVER_TP)
        try:
            if replace and self.intercept == Level.INITIAL:
                # Nothing of the live flight is needed: no peer to run first.
                if self.victim is Role.CLIENT:
                    client.start()
                _deliver(client if self.victim is Role.CLIENT else server, level, body, split)
                return
            for victim, live in self._honest(client, server):
                _deliver(victim, level, body if replace else _xor(live, body), split)
                return
        finally:
            client.close()
            server.close()

    def _honest(
        self, client: HandshakeEngine, server: HandshakeEngine
    ) -> Iterator[tuple[HandshakeEngine, bytes]]:
        """Runs the pair honestly; yields (victim, live flight) at the interception."""
        outgoing, receiver, role = client.start(), server, Role.SERVER
        for _ in range(8):
            produced: list[Event] = []
            for level, flight in _flights(outgoing):
                if role is self.victim and level == self.intercept:
                    yield receiver, flight
                    return
                if receiver.state not in _LIVE:
                    return
                if receiver.state is State.COMPLETE and role is Role.SERVER:
                    return
                produced += receiver.receive(level, flight)
            if not produced:
                return
            outgoing = produced
            receiver, role = (client, Role.CLIENT) if role is Role.SERVER else (server, Role.SERVER)


STAGES = {
    "engine_client_initial": Stage(Role.CLIENT, Level.INITIAL, (Level.INITIAL,)),
    "engine_client_handshake": Stage(Role.CLIENT, Level.HANDSHAKE, (Level.HANDSHAKE,)),
    # The NewSessionTicket after completion: the one legitimate APP-level input.
    "engine_client_app": Stage(Role.CLIENT, Level.APP, (Level.APP,)),
    "engine_server_initial": Stage(Role.SERVER, Level.INITIAL, (Level.INITIAL,)),
    "engine_server_handshake": Stage(Role.SERVER, Level.HANDSHAKE, (Level.HANDSHAKE,)),
    # A client never sends CRYPTO data at APP (or 0-RTT) level: the client's last
    # flight arrives there instead, a wrong level.
    "engine_server_app": Stage(Role.SERVER, Level.HANDSHAKE, (Level.APP, Level.EARLY)),
}


def recorded_flight(name: str, scenario: int) -> bytes | None:
    """The live flight the target ``name`` intercepts in ``scenario``, as seed material."""
    stage = STAGES[name]
    chosen = scenarios()[scenario]
    client = HandshakeEngine(chosen.client, CLIENT_TP)
    server = HandshakeEngine(chosen.server, SERVER_TP)
    try:
        for _victim, live in stage._honest(client, server):
            return live
        return None
    finally:
        client.close()
        server.close()


def _seeds(name: str) -> Iterator[bytes]:
    for scenario in range(3):
        yield bytes([scenario, 0])  # the honest flight
        yield bytes([scenario, 2 * 5])  # the honest flight in two parts
        live = recorded_flight(name, scenario)
        if live is not None:
            yield bytes([scenario, 1]) + live  # recorded bytes replacing the live ones
            yield bytes([scenario, 1 + 2 * 9]) + live


def _target(name: str) -> Target:
    stage = STAGES[name]
    return Target(
        name=name,
        one_input=stage.run,
        expected=(),
        seeds=functools.partial(_seeds, name),
    )


TARGETS = tuple(_target(name) for name in STAGES)
