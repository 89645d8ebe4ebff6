# SPDX-License-Identifier: GPL-2.0-only
"""setsockopt/getsockopt at SOL_QUIC with the kernel's checks (docs/kernel-abi.md §QUIC-OPTIONS).

Each handler takes the socket's ``Session`` (a listener has one too, in the
LISTENING state) and is called with the session's lock held.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable

from quichsd.quic.abi import (
    ALPN_MAX_LEN,
    CLOSE_PHRASE_BUFFER_SIZE,
    CONFIG_SIZE,
    CONNECTION_CLOSE_SIZE,
    CRYPTO_SECRET_SIZE,
    MAX_OPTLEN,
    SESSION_TICKET_MAX_LEN,
    SESSION_TICKET_MIN_LEN,
    SOL_QUIC,
    TOKEN_MAX_LEN,
    TRANSPORT_PARAM_SIZE,
    AbiError,
    Config,
    ConnectionClose,
    CryptoSecret,
    SockOpt,
    TransportParam,
    encode_alpn,
    parse_alpn,
)
from quichsd.tls.levels import SECRET_LENGTH
from quichsd.userspace.errors import fail
from quichsd.userspace.session import VERSIONS, Session, SockState
from quichsd.userspace.transport_params import apply_transport_param

_NOT_EMULATED = frozenset(
    {
        SockOpt.EVENT,
        SockOpt.STREAM_OPEN,
        SockOpt.STREAM_RESET,
        SockOpt.STREAM_STOP_SENDING,
        SockOpt.CONNECTION_ID,
        SockOpt.CONNECTION_MIGRATION,
    }
)


def _option(level: int, optname: int) -> SockOpt:
    if level != SOL_QUIC:
        raise fail(errno.ENOPROTOOPT, f"level {level} is not SOL_QUIC")
    try:
        option = SockOpt(optname)
    except ValueError:
        raise fail(errno.ENOPROTOOPT, f"unknown QUIC option {optname}") from None
    if option in _NOT_EMULATED:
        raise fail(errno.EOPNOTSUPP, f"{option.c_name} is not emulated")
    return option


def _fits(buflen: int, value: bytes, what: str) -> bytes:
    if buflen < len(value):
        raise fail(errno.EINVAL, f"{what}: {len(value)} bytes do not fit a {buflen}-byte buffer")
    return value


# --- set ----------------------------------------------------------------------------------


def _set_config(session: Session, value: bytes) -> None:
    if session.state is SockState.ESTABLISHED:
        raise fail(errno.EINVAL, "CONFIG cannot change once established")
    new = Config.unpack(value[:CONFIG_SIZE].ljust(CONFIG_SIZE, b"\0"))
    checks = (
        (new.version, new.version in VERSIONS, "version is not QUIC v1 or v2"),
        (
            new.plpmtud_probe_interval,
            5_000_000 <= new.plpmtud_probe_interval <= 0xFFFFFFFF // 30,
            "plpmtud_probe_interval",
        ),
        (new.initial_smoothed_rtt, 1000 <= new.initial_smoothed_rtt <= 6_000_000, "initial RTT"),
        (new.payload_cipher_type, new.payload_cipher_type in SECRET_LENGTH, "cipher not 51..54"),
        (new.congestion_control_algo, new.congestion_control_algo < 2, "congestion algorithm"),
        (new.certificate_request, new.certificate_request <= 2, "certificate_request not 0..2"),
        (new.keepalive_probe_interval, new.keepalive_probe_interval >= 1_500_000, "keepalive"),
    )
    for given, ok, what in checks:
        if given and not ok:
            raise fail(errno.EINVAL, f"CONFIG: {what}")
    changes = {
        f.name: getattr(new, f.name) for f in dataclasses.fields(Config) if getattr(new, f.name)
    }
    session.settings.config = dataclasses.replace(session.settings.config, **changes)


def _set_transport_param(session: Session, value: bytes) -> None:
    if len(value) < TRANSPORT_PARAM_SIZE:
        raise fail(errno.EINVAL, f"struct quic_transport_param is {TRANSPORT_PARAM_SIZE} bytes")
    new = TransportParam.unpack(value[:TRANSPORT_PARAM_SIZE])
    if session.state is SockState.ESTABLISHED:
        raise fail(errno.EINVAL, "TRANSPORT_PARAM cannot change once established")
    if new.remote:
        if session.state is not SockState.ESTABLISHING:
            raise fail(errno.EINVAL, "peer parameters only while establishing")
        session.remote_tp = apply_transport_param(session.remote_tp, new)
    else:
        session.settings.local_tp = apply_transport_param(session.settings.local_tp, new)
        if session.conn is not None:
            session.conn.local_params = session.settings.local_tp


def _set_token(session: Session, value: bytes) -> None:
    if not 0 < len(value) <= TOKEN_MAX_LEN:
        raise fail(errno.EINVAL, f"a token is 1..{TOKEN_MAX_LEN} bytes")
    if session.server:
        session.send_new_token(value)
    else:
        session.settings.token = value


def _set_alpn(session: Session, value: bytes) -> None:
    if session.state is SockState.LISTENING:
        raise fail(errno.EINVAL, "ALPN must be set before listen()")
    if not 0 < len(value) <= ALPN_MAX_LEN:
        raise fail(errno.EINVAL, f"ALPN list is 1..{ALPN_MAX_LEN} bytes")
    session.settings.alpn = parse_alpn(value)


def _set_session_ticket(session: Session, value: bytes) -> None:
    if not SESSION_TICKET_MIN_LEN <= len(value) <= SESSION_TICKET_MAX_LEN:
        raise fail(errno.EINVAL, f"session data is {SESSION_TICKET_MIN_LEN}..4096 bytes")
    session.store_session_ticket(value)


def _set_crypto_secret(session: Session, value: bytes) -> None:
    if len(value) != CRYPTO_SECRET_SIZE:
        raise fail(errno.EINVAL, f"struct quic_crypto_secret is {CRYPTO_SECRET_SIZE} bytes")
    secret = CryptoSecret.unpack(value)
    session.install_secret(secret.level, secret.send, secret.cipher, secret.secret)


def _set_connection_close(session: Session, value: bytes) -> None:
    if not 8 <= len(value) <= CONNECTION_CLOSE_SIZE:
        raise fail(
            errno.EINVAL, f"struct quic_connection_close is 8..{CONNECTION_CLOSE_SIZE} bytes"
        )
    info = ConnectionClose.unpack(value.ljust(CONNECTION_CLOSE_SIZE, b"\0"))
    phrase = info.phrase[: CLOSE_PHRASE_BUFFER_SIZE - 1]
    session.close_info = ConnectionClose(info.errcode, info.frame, phrase)


_SETTERS: dict[SockOpt, Callable[[Session, bytes], None]] = {
    SockOpt.CONFIG: _set_config,
    SockOpt.TRANSPORT_PARAM: _set_transport_param,
    SockOpt.TOKEN: _set_token,
    SockOpt.ALPN: _set_alpn,
    SockOpt.SESSION_TICKET: _set_session_ticket,
    SockOpt.CRYPTO_SECRET: _set_crypto_secret,
    SockOpt.TRANSPORT_PARAM_EXT: lambda session, value: session.set_peer_extension(value),
    SockOpt.CONNECTION_CLOSE: _set_connection_close,
    SockOpt.KEY_UPDATE: lambda session, value: session.key_update(),
}


def set_option(session: Session, level: int, optname: int, value: bytes) -> None:
    option = _option(level, optname)
    if len(value) > MAX_OPTLEN:
        raise fail(errno.EINVAL, f"optlen {len(value)} exceeds {MAX_OPTLEN}")
    try:
        _SETTERS[option](session, value)
    except AbiError as exc:
        raise fail(errno.EINVAL, str(exc)) from exc


# --- get ----------------------------------------------------------------------------------


def _get_token(session: Session, buflen: int) -> bytes:
    if session.server:
        raise fail(errno.EINVAL, "servers have no token to read")
    return _fits(buflen, session.settings.token, "TOKEN")


def _get_alpn(session: Session, buflen: int) -> bytes:
    entries = session.settings.alpn
    internal = sum(len(entry) + 1 for entry in entries)
    if buflen < internal:
        raise fail(errno.EINVAL, f"ALPN needs a {internal}-byte buffer, got {buflen}")
    return b",".join(entries)


def _get_session_ticket(session: Session, buflen: int) -> bytes:
    if session.state is SockState.LISTENING:
        raise fail(errno.EPIPE, "SESSION_TICKET on a listening socket")
    return _fits(buflen, session.session_ticket(), "SESSION_TICKET")


_GETTERS: dict[SockOpt, Callable[[Session, int], bytes]] = {
    SockOpt.CONFIG: lambda session, buflen: session.settings.config.pack()[: max(buflen, 0)],
    SockOpt.TOKEN: _get_token,
    SockOpt.ALPN: _get_alpn,
    SockOpt.SESSION_TICKET: _get_session_ticket,
    SockOpt.TRANSPORT_PARAM_EXT: lambda session, buflen: _fits(
        buflen, session.local_extension(), "TRANSPORT_PARAM_EXT"
    ),
    SockOpt.CONNECTION_CLOSE: lambda session, buflen: session.close_info.pack()[: max(buflen, 0)],
}


def get_option(session: Session, level: int, optname: int, buflen: int, data: bytes = b"") -> bytes:
    """``data`` is the in/out buffer's input (only TRANSPORT_PARAM reads it: ``remote``)."""
    option = _option(level, optname)
    if option is SockOpt.TRANSPORT_PARAM:
        remote = bool(data[:1] and data[0])
        param = session.remote_tp if remote else session.settings.local_tp
        return dataclasses.replace(param, remote=remote).pack()[: max(buflen, 0)]
    getter = _GETTERS.get(option)
    if getter is None:
        raise fail(errno.ENOPROTOOPT, f"{option.c_name} cannot be read")
    return getter(session, buflen)


def preset(
    session: Session,
    *,
    alpn: tuple[bytes | str, ...] = (),
    config: Config | None = None,
    transport_param: TransportParam | None = None,
    session_ticket: bytes | None = None,
    token: bytes | None = None,
) -> None:
    """The setsockopt calls a kernel consumer makes before connect() or listen()."""
    try:
        values = [
            (SockOpt.ALPN, encode_alpn(alpn) if alpn else None),
            (SockOpt.CONFIG, None if config is None else config.pack()),
            (SockOpt.TRANSPORT_PARAM, None if transport_param is None else transport_param.pack()),
            (SockOpt.TOKEN, token),
            (SockOpt.SESSION_TICKET, session_ticket),
        ]
    except AbiError as exc:
        raise fail(errno.EINVAL, str(exc)) from exc
    for option, value in values:
        if value is not None:
            set_option(session, SOL_QUIC, option, value)
