# SPDX-License-Identifier: GPL-2.0-only
"""Userspace model of the kernel side of the ``handshake`` generic-netlink family.

The machine running the tests has no net/handshake, so this plays the kernel: it
serves ``quichsd.userspace.family_channel.ModelChannel`` connections (AF_UNIX SOCK_SEQPACKET,
the same netlink bytes as a real NETLINK_GENERIC socket) from a thread, and offers
tests the kernel-consumer API (``submit`` / ``RequestHandle.wait`` / ``cancel``).

Behaviour modelled (docs/kernel-abi.md):

* nlctrl GETFAMILY by name or id (ENOENT when ``family_present=False``; also for any
  message to the family id then), dump, NEWFAMILY reply with version 1, ops and the
  groups ``none`` (index 0) and ``tlshd`` (index 1).
* netlink core: messages without NLM_F_REQUEST or of a control type are skipped
  (ACK only if NLM_F_ACK); errors always produce an NLMSG_ERROR, success only with
  NLM_F_ACK; the ACK carries the original message unless NETLINK_CAP_ACK, and
  extended-ACK TLVs (reason, attribute offset, missing type) with NETLINK_EXT_ACK.
* genl: short message → EINVAL; unknown command (READY included) → EOPNOTSUPP;
  ACCEPT without admin (``admin=False``) → EPERM before validation; NLM_F_DUMP →
  EOPNOTSUPP; strict validation (``family_policy``) → EINVAL.
* ACCEPT: first pending request of the class → reply (SOCKFD, MESSAGE_TYPE,
  PEERNAME?, TIMEOUT?, KEYRING?, AUTH_MODE, PEER_IDENTITY×N for PSK / CERTIFICATE
  nest with NLA_F_NESTED for X509 if cert or privkey ≠ 0) with the socket passed by
  SCM_RIGHTS; none pending → EAGAIN; reply undeliverable → request completed with EIO.
* DONE: SOCKFD missing → EINVAL; no fd passed → EBADF; not a socket → ENOTSOCK; socket
  without a request → EBUSY; STATUS absent → EIO; up to 5 REMOTE_AUTH kept (even when
  STATUS ≠ 0); completes exactly once, later DONEs (and DONE after cancel) are
  acknowledged but ignored.
* submit: EAGAIN at ``pending_max``; EBUSY while the socket has a request (the kernel
  keeps the entry until the socket is destroyed: ``RequestHandle.release()``);
  ESRCH with nobody in the group (request dropped); else one READY per request.
* cancel: pending → removed; accepted → marked done without completion; completed →
  False.
* faults (``inject_accept_fault``; the tests make them, tests/support/family_faults.py):
  an ACCEPT that fails after completing its request with EIO (EMFILE), or a reply
  with mangled SOCKFD attributes, attributes left out, or no fd installed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import selectors
import socket
import stat
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from quichsd.netlink.constants import (
    CTRL_CMD_GETFAMILY,
    FAMILY_NAME,
    GENL_HDRLEN,
    GENL_ID_CTRL,
    GROUP_NONE,
    GROUP_TLSHD,
    MAX_PEER_IDS,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_DROP_MEMBERSHIP,
    NETLINK_EXT_ACK,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_HDRLEN,
    NLMSG_MIN_TYPE,
    SOL_NETLINK,
    AcceptAttr,
    AuthMode,
    Command,
    DoneAttr,
    HandlerClass,
    MessageType,
)
from quichsd.netlink.errors import MalformedMessage
from quichsd.netlink.messages import (
    ACCEPT_NAMES,
    DONE_NAMES,
    Framed,
    acceptmsg,
    ctrlmsg,
    decode,
    donemsg,
    raw_attributes,
    split_datagram,
)

from . import family_wire as wire
from .family_channel import MODEL_CTL_HELLO, MODEL_CTL_SETSOCKOPT, MODEL_CTL_TYPE, modelctlmsg
from .family_policy import ACCEPT_POLICY, Refusal, done_policy, last, validate
from .family_request import Completion, ModelStats, RequestCancelled, RequestHandle, State
from .family_wire import AcceptFault

__all__ = ["Completion", "FamilyModel", "ModelStats", "RequestCancelled", "RequestHandle"]


@dataclass
class _Conn:
    sock: socket.socket
    port: int
    groups: set[int] = field(default_factory=set)
    cap_ack: bool = False
    ext_ack: bool = False


class FamilyModel:
    """The kernel's side of the family, served from a thread (see module doc)."""

    def __init__(
        self,
        *,
        address: str | None = None,
        family_present: bool = True,
        family_id: int = 0x1D,
        group_base: int = 0x0B,
        supports_remote_auth: bool = True,
        supports_tag: bool = False,
        status_max: bool = True,
        pending_max: int = 50,
        admin: bool = True,
    ) -> None:
        self.family_present = family_present
        self.family_id = family_id
        self.groups = {GROUP_NONE: group_base, GROUP_TLSHD: group_base + 1}
        self.done_policy = done_policy(
            remote_auth=supports_remote_auth, tag=supports_tag, status_max=status_max
        )
        self.pending_max = pending_max
        #: Whether ACCEPT senders hold CAP_NET_ADMIN (False → EPERM).
        self.admin = admin
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if address is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="hsmodel-")
            address = os.path.join(self._tmpdir.name, "handshake.sock")
        self.address = address
        self._lock = threading.RLock()
        self._stats = ModelStats()
        self._conns: dict[int, _Conn] = {}
        self._pending: list[RequestHandle] = []
        self._table: dict[tuple[int, int], RequestHandle] = {}
        self.requests: list[RequestHandle] = []
        self._ports = itertools.count(4000)
        self._listener: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._accept_faults: deque[AcceptFault] = deque()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FamilyModel:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        listener.bind(self.address)
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="handshake-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for conn in self._conns.values():
                conn.sock.close()
            self._conns.clear()
            for req in self.requests:
                req._close_fd()
        if self._listener is not None:
            self._listener.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> FamilyModel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------------
    @property
    def stats(self) -> ModelStats:
        with self._lock:
            return replace(self._stats, errors=dict(self._stats.errors))

    @property
    def accepts(self) -> int:
        return self.stats.accepts

    @property
    def dones(self) -> int:
        return self.stats.dones

    @property
    def dones_ignored(self) -> int:
        return self.stats.dones_ignored

    def unanswered(self) -> list[RequestHandle]:
        """Accepted requests still waiting for their DONE."""
        with self._lock:
            return [r for r in self.requests if r.state is State.ACCEPTED]

    def listeners(self) -> list[int]:
        """Port ids joined to the ``tlshd`` group."""
        with self._lock:
            group = self.groups[GROUP_TLSHD]
            return [c.port for c in self._conns.values() if group in c.groups]

    def inject_accept_fault(self, fault: AcceptFault) -> None:
        """The next ACCEPT that finds a request plays ``fault`` (family_faults)."""
        with self._lock:
            self._accept_faults.append(fault)

    # -- kernel consumer API ---------------------------------------------------------------
    def submit(
        self,
        sock: socket.socket | int,
        message_type: int = MessageType.CLIENTHELLO,
        auth_mode: int = AuthMode.UNAUTH,
        timeout_ms: int | None = None,
        peer_identities: Sequence[int] = (),
        cert: int = 0,
        privkey: int = 0,
        peername: str | None = None,
        keyring: int | None = None,
        handler_class: int = HandlerClass.TLSHD,
    ) -> RequestHandle:
        """``handshake_req_submit``: raises ``OSError`` (EAGAIN/EBUSY/ESRCH/...)."""
        if len(peer_identities) > MAX_PEER_IDS:
            raise ValueError(f"at most {MAX_PEER_IDS} peer identities")
        fd = sock if isinstance(sock, int) else sock.fileno()
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EINVAL, "submit needs a socket")
        key = (st.st_dev, st.st_ino)
        with self._lock:
            if not self.family_present:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
            if len(self._pending) >= self.pending_max:
                raise OSError(errno.EAGAIN, "too many pending handshake requests")
            if key in self._table:
                raise OSError(errno.EBUSY, "socket already has a handshake request")
            targets = [c for c in self._conns.values() if handler_class + self._base in c.groups]
            if not targets:
                raise OSError(errno.ESRCH, "no handshake agent is listening")
            req = RequestHandle(
                self,
                os.dup(fd),
                key,
                handler_class=int(handler_class),
                message_type=int(message_type),
                auth_mode=int(auth_mode),
                timeout_ms=timeout_ms,
                peer_identities=[int(p) for p in peer_identities],
                cert=cert,
                privkey=privkey,
                peername=peername,
                keyring=keyring,
            )
            self._table[key] = req
            self._pending.append(req)
            self.requests.append(req)
            ready = wire.ready(self.family_id, int(handler_class))
            for conn in targets:
                try:
                    conn.sock.send(ready)
                    self._stats.readies += 1
                except OSError:
                    self._stats.readies_dropped += 1  # a full queue drops multicast
            return req

    @property
    def _base(self) -> int:
        return self.groups[GROUP_NONE]

    def _cancel(self, req: RequestHandle) -> bool:
        with self._lock:
            if req.state is State.PENDING and req in self._pending:
                self._pending.remove(req)
                req._finish(State.CANCELLED, None)
                return True
            if req.state is State.ACCEPTED:
                req._finish(State.CANCELLED, None)
                return True
            return False

    def forget(self, req: RequestHandle) -> None:
        """Drops a released request from ``requests`` (long runs: bench/soak.py)."""
        self._release(req)
        with self._lock, contextlib.suppress(ValueError):
            self.requests.remove(req)

    def _release(self, req: RequestHandle) -> None:
        with self._lock:
            if req in self._pending:
                self._pending.remove(req)
            if self._table.get(req.key) is req:
                del self._table[req.key]
            if not req.done:
                req._finish(State.CANCELLED, None)

    # -- server loop ---------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "listen":
                        self._accept_conn(sel)
                    else:
                        self._service(sel, key.data)
        finally:
            sel.close()

    def _accept_conn(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        with self._lock:
            conn = _Conn(sock, next(self._ports))
            self._conns[sock.fileno()] = conn
        sel.register(sock, selectors.EVENT_READ, conn)

    def _service(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            data, anc, _flags, _addr = conn.sock.recvmsg(
                65536, socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        except OSError:
            data, anc = b"", []
        fds = wire.fds_from(anc)
        if not data:
            sel.unregister(conn.sock)
            with self._lock:
                self._conns.pop(conn.sock.fileno(), None)
            conn.sock.close()
            wire.close_all(fds)
            return
        try:
            with self._lock:
                self._datagram(conn, data, fds)
        finally:
            wire.close_all(fds)

    # -- netlink core --------------------------------------------------------------------
    def _datagram(self, conn: _Conn, data: bytes, fds: list[int]) -> None:
        try:
            messages = split_datagram(data)
        except MalformedMessage:
            return  # the kernel stops silently at a bad nlmsg_len
        for framed in messages:
            hdr = framed.header
            refusal: Refusal | None = None
            if hdr.flags & NLM_F_REQUEST and hdr.type == MODEL_CTL_TYPE:
                refusal = self._control(conn, framed)
            elif hdr.flags & NLM_F_REQUEST and hdr.type >= NLMSG_MIN_TYPE:
                refusal = self._genl(conn, framed, fds)
            if refusal is not None:
                name = errno.errorcode.get(refusal.errno, str(refusal.errno))
                self._stats.errors[name] = self._stats.errors.get(name, 0) + 1
            if refusal is not None or hdr.flags & NLM_F_ACK:
                self._ack(conn, framed, refusal)

    def _ack(self, conn: _Conn, framed: Framed, refusal: Refusal | None) -> None:
        self._send(
            conn,
            wire.ack(
                framed.data,
                refusal,
                conn.port,
                cap_ack=conn.cap_ack,
                ext_ack=conn.ext_ack,
                header=framed.header,
            ),
        )

    def _send(self, conn: _Conn, data: bytes, fds: Sequence[int] = ()) -> bool:
        try:
            if fds:
                socket.send_fds(conn.sock, [data], list(fds))
            else:
                conn.sock.send(data)
            return True
        except OSError:
            return False

    def _control(self, conn: _Conn, framed: Framed) -> Refusal | None:
        msg = decode(framed.data, modelctlmsg, framed.header)
        if msg["op"] == MODEL_CTL_HELLO:
            return None
        if msg["op"] != MODEL_CTL_SETSOCKOPT:
            return Refusal(errno.EOPNOTSUPP)
        if msg["level"] != SOL_NETLINK:
            return Refusal(errno.ENOPROTOOPT)
        opt, value = msg["optname"], msg["value"]
        if opt in (NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP):
            if value == 0:
                return Refusal(errno.EINVAL)
            if opt == NETLINK_ADD_MEMBERSHIP:
                conn.groups.add(value)
            else:
                conn.groups.discard(value)
        elif opt == NETLINK_CAP_ACK:
            conn.cap_ack = bool(value)
        elif opt == NETLINK_EXT_ACK:
            conn.ext_ack = bool(value)
        else:
            return Refusal(errno.ENOPROTOOPT)
        return None

    # -- generic netlink -----------------------------------------------------------------
    def _genl(self, conn: _Conn, framed: Framed, fds: list[int]) -> Refusal | None:
        hdr, raw = framed
        if len(raw) < NLMSG_HDRLEN + GENL_HDRLEN:
            return Refusal(errno.EINVAL)
        if hdr.type == GENL_ID_CTRL:
            return self._nlctrl(conn, framed)
        if not self.family_present or hdr.type != self.family_id:
            return Refusal(errno.ENOENT)
        cmd = raw[NLMSG_HDRLEN]
        if cmd not in (Command.ACCEPT, Command.DONE):
            return Refusal(errno.EOPNOTSUPP)
        if cmd == Command.ACCEPT and not self.admin:
            return Refusal(errno.EPERM)
        if hdr.flags & NLM_F_DUMP == NLM_F_DUMP:
            return Refusal(errno.EOPNOTSUPP)
        cls, names, policy = (
            (acceptmsg, ACCEPT_NAMES, ACCEPT_POLICY)
            if cmd == Command.ACCEPT
            else (donemsg, DONE_NAMES, self.done_policy)
        )
        try:
            attrs, leftover = raw_attributes(decode(raw, cls, hdr), names)
        except MalformedMessage:
            return Refusal(errno.EINVAL, "malformed attributes")
        refusal = validate(attrs, leftover, policy)
        if refusal is not None:
            return refusal
        if cmd == Command.ACCEPT:
            return self._accept(conn, hdr.seq, attrs)
        return self._done(attrs, fds)

    def _nlctrl(self, conn: _Conn, framed: Framed) -> Refusal | None:
        hdr, raw = framed
        msg = decode(raw, ctrlmsg, hdr)
        if msg["cmd"] != CTRL_CMD_GETFAMILY:
            return Refusal(errno.EOPNOTSUPP)
        if hdr.flags & NLM_F_DUMP == NLM_F_DUMP:
            if self.family_present:
                self._send(conn, self._info(hdr.seq, conn.port, NLM_F_MULTI))
            self._send(conn, wire.dump_done(hdr.seq, conn.port))
            return None
        name = msg.get_attr("CTRL_ATTR_FAMILY_NAME")
        fid = msg.get_attr("CTRL_ATTR_FAMILY_ID")
        if name is None and fid is None:
            return Refusal(errno.EINVAL)
        found = self.family_present and (
            fid == self.family_id if fid is not None else name == FAMILY_NAME
        )
        if not found:
            return Refusal(errno.ENOENT)
        self._send(conn, self._info(hdr.seq, conn.port, 0))
        return None

    def _info(self, seq: int, port: int, flags: int) -> bytes:
        return wire.family_info(self.family_id, self.groups, seq, port, flags)

    # -- handshake commands -----------------------------------------------------------------
    def _accept(self, conn: _Conn, seq: int, attrs: list[Any]) -> Refusal | None:
        cls_attr = last(attrs, AcceptAttr.HANDLER_CLASS)
        if cls_attr is None:
            return Refusal(errno.EINVAL, missing=int(AcceptAttr.HANDLER_CLASS))
        (handler_class,) = struct.unpack("=I", cls_attr.payload)
        req = next((r for r in self._pending if r.handler_class == handler_class), None)
        if req is None:
            return Refusal(errno.EAGAIN)
        self._pending.remove(req)
        fault = self._accept_faults.popleft() if self._accept_faults else None
        reply = wire.accept_reply(req, self.family_id, seq, conn.port, fault)
        if req.done:
            return Refusal(errno.EIO)
        if fault is not None and (fault.error or not fault.install):
            # The kernel could not install the fd: it completes the request itself.
            req._finish(State.COMPLETED, Completion(errno.EIO, []))
            if fault.error:
                return Refusal(fault.error)
            return None if self._send(conn, reply) else Refusal(errno.EIO)
        # Accepted before the reply leaves, so the agent never observes a stale state.
        req.state = State.ACCEPTED
        req.accepted_by = conn.port
        if not self._send(conn, reply, [req._fd]):
            req._finish(State.COMPLETED, Completion(errno.EIO, []))
            return Refusal(errno.EIO)
        self._stats.accepts += 1
        return None

    def _done(self, attrs: list[Any], fds: list[int]) -> Refusal | None:
        sockfd = last(attrs, DoneAttr.SOCKFD)
        if sockfd is None:
            return Refusal(errno.EINVAL, missing=int(DoneAttr.SOCKFD))
        if not fds:
            return Refusal(errno.EBADF)
        fd = fds.pop(0)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISSOCK(st.st_mode):
            return Refusal(errno.ENOTSOCK)
        req = self._table.get((st.st_dev, st.st_ino))
        if req is None:
            return Refusal(errno.EBUSY)
        status_attr = last(attrs, DoneAttr.STATUS)
        status = (
            struct.unpack("=I", status_attr.payload)[0] if status_attr is not None else errno.EIO
        )
        remote = [
            struct.unpack("=I", a.payload)[0] for a in attrs if a.number == DoneAttr.REMOTE_AUTH
        ][:MAX_PEER_IDS]
        if req.done:
            self._stats.dones_ignored += 1
            return None
        if req in self._pending:  # DONE before ACCEPT: never hand it out afterwards
            self._pending.remove(req)
        req._finish(State.COMPLETED, Completion(int(status), remote))
        self._stats.dones += 1
        return None
