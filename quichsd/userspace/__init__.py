# SPDX-License-Identifier: GPL-2.0-only
"""A userspace model of the Linux QUIC module's socket, for running the agent without it.

API (everything else is the ``quichsd.quic.sockopt.QuicSocket`` protocol, so
the agent's typed socket operations run on these objects unchanged):

* ``ModelQuicSocket.connect(("127.0.0.1", port), alpn=..., config=...,
  transport_param=..., session_ticket=..., token=..., server_name=...)`` -- a
  client socket after the kernel consumer's setsockopt calls and connect();
  or ``ModelQuicSocket.client()`` + setsockopt + ``connect_to(address)``.
* ``ModelQuicListener(("127.0.0.1", 0), alpn=..., config=...,
  transport_param=..., session_ticket=...)`` -- ``.address``, ``.fileno()``
  (readable while a connection waits), ``.accept(timeout)`` -> server
  ``ModelQuicSocket`` once the client's Initial CRYPTO data has arrived.
* On a socket: ``setsockopt``, ``getsockopt``, ``getsockopt_inout``,
  ``sendmsg``, ``recvmsg``, ``fileno``, ``settimeout``, ``close`` (also a
  context manager); ``state`` (``SockState``), ``is_server``,
  ``peer_address``, ``server_name``; after the handshake
  ``next_stream_id()``, ``send_stream(id, data, fin)`` and
  ``recv_stream(timeout) -> (id, data, fin)``; for tests ``kept_packets(level)``
  and ``io_failures`` (exceptions the I/O thread caught; should be empty).

Packets are real QUIC v1/v2 on UDP over 127.0.0.1 (only), one background
thread per client socket or listener, so either side can talk to an
unmodified QUIC stack such as aioquic.

Emulated, with the kernel's semantics (docs/kernel-abi.md):

* States CLOSED -> ESTABLISHING (``connect``/``accept``) -> ESTABLISHED (both
  1-RTT keys installed) -> CLOSED (either side closed); LISTENING listeners.
* Handshake data path: ``recvmsg`` returns one reassembled CRYPTO run (or the
  rest of a partly read one) with MSG_EOR and a QUIC_HANDSHAKE_INFO cmsg
  (INITIAL/HANDSHAKE only; MSG_CTRUNC if the control buffer is too small),
  ahead of stream data; EAGAIN with MSG_DONTWAIT; queued data, then ENOTCONN
  once closed.  ``sendmsg`` with a handshake cmsg queues CRYPTO data (EINVAL
  at EARLY or without the level's send key, EMSGSIZE when empty, EINVAL for
  flags the kernel refuses); MSG_MORE holds data back until a send without it.
* ``fileno()`` is an eventfd readable exactly while ``recvmsg`` would not block.
* CRYPTO_SECRET: EINVAL unless ESTABLISHING, at INITIAL, for a cipher outside
  51..54, a second cipher at a level, a key installed twice, or a secret not
  of the cipher's length (stricter than the kernel, which cannot see the
  length: bytes past it must be zero, and a 48-byte secret must not end in 16
  zero bytes).  Packets that arrive before their receive key are kept and
  processed inside the install.  Installing the 1-RTT receive key clears the
  stored session ticket and token.  Both 1-RTT keys -> ESTABLISHED; a server
  then sends HANDSHAKE_DONE and NEW_TOKEN and drops its Handshake keys.
* TRANSPORT_PARAM_EXT get (our extension body) and set (the peer's: a parse or
  validation error closes the connection with 0x08, or 0x11 for a version
  mismatch, and fails with EINVAL), only while ESTABLISHING.
  TRANSPORT_PARAM get/set (local/remote, non-zero fields, range checks) --
  local values are what the extension advertises and what flow control uses.
* ALPN (comma list, EINVAL on a listener and for a short get buffer), CONFIG
  (only non-zero fields, range checks, EINVAL once ESTABLISHED;
  payload_cipher_type, receive_session_ticket and certificate_request only
  stored), TOKEN (client store/get; server: NEW_TOKEN when ESTABLISHED, EAGAIN
  while one is in flight; get EINVAL), SESSION_TICKET (client: session data
  while ESTABLISHING, then the first complete NewSessionTicket received at
  1-RTT -- which recvmsg never returns -- or data set afterwards; server: the
  stored key or a 64-byte key derived from the peer address; EPIPE on a
  listener), CONNECTION_CLOSE (set: the code and phrase ``close()`` sends --
  a transport close, default 0x0c, while ESTABLISHING, an application close
  once ESTABLISHED; get: the peer's code, frame and phrase after it closed),
  KEY_UPDATE (EPIPE unless ESTABLISHED).  Unknown options: ENOPROTOOPT.
* After the handshake: streams (``send_stream``/``recv_stream``, or
  sendmsg/recvmsg with a QUIC_STREAM_INFO cmsg), NewSessionTicket, NEW_TOKEN,
  HANDSHAKE_DONE, key updates; a client resends its ClientHello after Retry.

NOT emulated (release note):

* AES-128-CCM (cipher 53) packet protection: installing such a secret fails
  with EOPNOTSUPP (aioquic has no CCM), so a handshake that negotiates it
  (payload_cipher_type=53, our engine on both ends) stops at that install.
* 0-RTT application data from a model client: EARLY secrets install and
  0-RTT packets are protected/decrypted, but the preloaded peer parameters
  (TRANSPORT_PARAM remote=1) are only stored, so a model client sends no early
  stream data.  (A model server does receive a peer's 0-RTT stream data and,
  as the kernel, keeps it off the receive list until the 1-RTT receive key.)
* Options EVENT, STREAM_OPEN, STREAM_RESET, STREAM_STOP_SENDING,
  CONNECTION_ID and CONNECTION_MIGRATION (EOPNOTSUPP); event notifications
  (MSG_QUIC_NOTIFICATION), DATAGRAM frames (MSG_QUIC_DATAGRAM: EOPNOTSUPP),
  stream sends without a QUIC_STREAM_INFO cmsg (EINVAL), blocking on send
  buffer space, stream flow-control and stream-state details beyond aioquic's.
* Server address validation: ``validate_peer_address`` (Retry) is stored but
  never sends a Retry, and tokens in client Initials are not checked; compatible
  version negotiation (a server answers in the client's version); connection
  migration, preferred address and PMTU probing (aioquic's own behaviour applies).
* Demultiplexing: a listener routes by peer address, not by connection ID or
  ALPN, and only one listener can use a port.
* Timing and limits: retransmission, pacing, ACK delay and congestion control
  are aioquic's, with the kernel's default initial RTT (333 ms); at most 256
  packets are kept per level while waiting for a key.  A CRYPTO "frame" as
  delivered by recvmsg is a reassembled in-order run, which may merge frames
  that arrived out of order.  Errno values and flags for cases the spec does
  not name are the model's choice: EPIPE for sends once closed, EBADF after
  ``close()``, EISCONN, EOPNOTSUPP, MSG_EOR on the last piece of a FIN'd
  stream delivery.
* Secret hygiene: the kernel zeroises its copy of a secret; the model's
  Python copies (and aioquic's derived keys) cannot be wiped.
* Only IPv4 loopback (127.0.0.1); no IPv6, no other addresses, no SO_* options.

Built on aioquic 1.7.2's packet layer (the ``quichsd[userspace]`` extra; the
names above are imported lazily, so the family model and the rest of this
package do not need it); ``aioquic_seam`` is the one module that imports
aioquic and lists the private hooks the model relies on.  ``missing()`` says in
one line what to install when it cannot run.  Nothing on the daemon's runtime
path imports this package (daemon/wiring.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quichsd.userspace.listener import ModelQuicListener
    from quichsd.userspace.quic_socket import ModelQuicSocket
    from quichsd.userspace.session import SockState

__all__ = ["ModelQuicListener", "ModelQuicSocket", "SockState", "missing"]

_HOMES = {
    "ModelQuicListener": "quichsd.userspace.listener",
    "ModelQuicSocket": "quichsd.userspace.quic_socket",
    "SockState": "quichsd.userspace.session",
}


def __getattr__(name: str) -> Any:
    """Imported on first use, so other models in this package do not need aioquic."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def missing() -> str | None:
    """None when the QUIC socket model can run here; else one line: what to install."""
    try:
        importlib.import_module("quichsd.userspace.aioquic_seam")
    except ImportError as exc:  # aioquic_seam.UnsupportedAioquic, whatever went wrong
        return str(exc)
    return None
