# SPDX-License-Identifier: GPL-2.0-only
"""Client side of the ``handshake`` family: resolve, join, READY, ACCEPT, DONE, probe.

Works over any ``Channel`` (kernel socket or the userspace model). Request/reply is
synchronous with a bounded wait: the kernel answers ACCEPT and DONE from inside the
sendmsg, so the answer is already queued when ``send`` returns. READY notifications
that arrive while a request waits for its answer are kept and handed out by the next
``recv_ready()``; poll loops sharing one family for notifications and requests must
therefore call ``recv_ready()`` after every request (tlshd avoids the question by
using a fresh socket per request, which ``HandshakeFamily.open_*`` makes cheap).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import trace
from .channel import Channel, KernelChannel
from .constants import (
    CTRL_CMD_GETFAMILY,
    FAMILY_NAME,
    GENL_ID_CTRL,
    GROUP_TLSHD,
    MAX_ERRNO,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    PROBE_TAG,
    AcceptAttr,
    Command,
    DoneAttr,
    HandlerClass,
)
from .errors import (
    FamilyUnavailable,
    MalformedMessage,
    MalformedRequest,
    NetlinkCommandError,
    ReplyTimeout,
)
from .messages import (
    ACCEPT_NAMES,
    DONE_NAMES,
    AttrValue,
    Framed,
    acceptmsg,
    ack_class,
    attribute_at,
    ctrlmsg,
    decode,
    donemsg,
    encode,
    split_datagram,
)
from .requests import AcceptedRequest, ReadyNotice, parse_accept_reply, parse_ready

__all__ = ["HandshakeFamily", "KernelCapabilities"]

log = logging.getLogger(__name__)

#: tlshd puts 0 in the genl version byte of ACCEPT and DONE; the kernel ignores it.
_REQUEST_VERSION = 0
#: The capability probe goes out through libnl's genlmsg_put with version 1.
_PROBE_VERSION = 1
#: Unacknowledged requests remembered for naming late errors.
_SENT_KEPT = 64


@dataclass(frozen=True)
class KernelCapabilities:
    """Which optional DONE attributes the kernel parses (tlshd's startup probe)."""

    remote_peerids: bool
    session_tags: bool


@dataclass
class _Answer:
    reply: Framed | None = None
    acked: bool = False


class HandshakeFamily:
    """One netlink socket speaking the ``handshake`` family. Not thread-safe."""

    def __init__(self, channel: Channel, *, reply_timeout: float = 5.0) -> None:
        self.channel = channel
        self.reply_timeout = reply_timeout
        self.family_id: int | None = None
        self.version: int | None = None
        self.groups: dict[str, int] = {}
        self.joined: set[str] = set()
        self.capabilities: KernelCapabilities | None = None
        #: NLMSG_ERRORs that arrived for requests nobody waited for (ack=False DONE).
        self.late_errors: list[NetlinkCommandError] = []
        self._seq = itertools.count(int(time.time()) & 0x7FFFFFFF)
        self._ready: deque[ReadyNotice] = deque()
        self._sent: dict[int, tuple[str, bytes]] = {}

    # -- construction ----------------------------------------------------------------
    @classmethod
    def open_kernel(cls, *, join: bool = False, reply_timeout: float = 5.0) -> HandshakeFamily:
        """Resolve (and optionally join) over a real NETLINK_GENERIC socket."""
        return cls.over(KernelChannel(), join=join, reply_timeout=reply_timeout)

    @classmethod
    def over(
        cls, channel: Channel, *, join: bool = False, reply_timeout: float = 5.0
    ) -> HandshakeFamily:
        """Resolved (and optionally joined) over ``channel``; closed if that fails."""
        family = cls(channel, reply_timeout=reply_timeout)
        try:
            family.resolve()
            if join:
                family.join()
        except BaseException:
            family.close()
            raise
        return family

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> HandshakeFamily:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fileno(self) -> int:
        """Non-blocking descriptor to watch for READY notifications."""
        return self.channel.fileno()

    # -- resolution and membership ----------------------------------------------------
    def resolve(self) -> None:
        """nlctrl GETFAMILY ``handshake``; ``FamilyUnavailable`` if it is not registered."""
        seq = next(self._seq)
        data = encode(
            ctrlmsg,
            msg_type=GENL_ID_CTRL,
            flags=NLM_F_REQUEST,
            seq=seq,
            pid=self.channel.port_id,
            attrs=[("CTRL_ATTR_FAMILY_NAME", FAMILY_NAME)],
            cmd=CTRL_CMD_GETFAMILY,
            version=1,
        )
        try:
            answer = self._transact("GETFAMILY", data, seq, want_reply=True, want_ack=False)
        except NetlinkCommandError as exc:
            if exc.errno == errno.ENOENT:
                raise FamilyUnavailable(FAMILY_NAME, errno.ENOENT) from exc
            raise
        assert answer.reply is not None
        reply = decode(answer.reply.data, ctrlmsg, answer.reply.header)
        family_id = reply.get_attr("CTRL_ATTR_FAMILY_ID")
        if not family_id:
            raise FamilyUnavailable(FAMILY_NAME, 0, "GETFAMILY reply without a family id")
        self.family_id = int(family_id)
        self.version = reply.get_attr("CTRL_ATTR_VERSION")
        self.groups = {
            g.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): int(g.get_attr("CTRL_ATTR_MCAST_GRP_ID"))
            for g in reply.get_attr("CTRL_ATTR_MCAST_GROUPS", [])
        }
        log.debug("resolved %s: id %#x groups %s", FAMILY_NAME, self.family_id, self.groups)

    def join(self, group: str = GROUP_TLSHD) -> None:
        """Join a multicast group of the family (``tlshd`` receives READY)."""
        self._require_family()
        if group not in self.groups:
            raise FamilyUnavailable(FAMILY_NAME, 0, f"no multicast group {group!r}")
        self.channel.add_membership(self.groups[group])
        self.joined.add(group)

    def _require_family(self) -> int:
        if self.family_id is None:
            raise RuntimeError("resolve() the handshake family first")
        return self.family_id

    # -- READY ------------------------------------------------------------------------
    def recv_ready(self) -> list[ReadyNotice]:
        """Drain READY notifications without blocking (buffered ones first).

        An ENOBUFS from the socket means notifications were lost; it is reported as one
        synthetic tlshd READY so the caller still tries an ACCEPT.
        """
        out = list(self._ready)
        self._ready.clear()
        while True:
            try:
                data = self._recv(0)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("netlink receive queue overran; READY notifications were lost")
                out.append(ReadyNotice(HandlerClass.TLSHD))
                continue
            if data is None:
                return out
            self._dispatch_unsolicited(data)
            out.extend(self._ready)
            self._ready.clear()

    def pending_ready(self) -> bool:
        """READY notices buffered in userspace (invisible to poll on ``fileno()``)."""
        return bool(self._ready) or self.channel.pending()

    async def wait_ready(self) -> list[ReadyNotice]:
        """Await at least one READY notification (asyncio)."""
        loop = asyncio.get_running_loop()
        while True:
            notices = self.recv_ready()
            if notices:
                return notices
            readable: asyncio.Future[None] = loop.create_future()

            def _wake(fut: asyncio.Future[None] = readable) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(self.fileno(), _wake)
            try:
                await readable
            finally:
                loop.remove_reader(self.fileno())

    # -- ACCEPT -----------------------------------------------------------------------
    def accept(self, handler_class: int = HandlerClass.TLSHD) -> AcceptedRequest | None:
        """Take the next pending request; ``None`` when none is pending (EAGAIN).

        Raises ``MalformedRequest`` (with ``sockfd`` when known) for a reply we cannot
        use, ``NetlinkCommandError`` for any other kernel error (EPERM without
        CAP_NET_ADMIN, EINVAL for a bad handler class).
        """
        family_id = self._require_family()
        # The kernel installs the request's fd at the lowest free number (as dup() picks
        # one): learning that number first tells which fd the reply installed, whatever
        # its SOCKFD says (see _installed_by).
        expected = _lowest_free_fd(self.fileno())
        seq = next(self._seq)
        data = encode(
            acceptmsg,
            msg_type=family_id,
            flags=NLM_F_REQUEST,
            seq=seq,
            pid=self.channel.port_id,
            attrs=[(ACCEPT_NAMES[AcceptAttr.HANDLER_CLASS], int(handler_class))],
            cmd=Command.ACCEPT,
            version=_REQUEST_VERSION,
        )
        try:
            answer = self._transact("ACCEPT", data, seq, want_reply=True, want_ack=False)
        except NetlinkCommandError as exc:
            if exc.errno == errno.EAGAIN:
                return None
            raise
        assert answer.reply is not None
        try:
            request = parse_accept_reply(answer.reply.data, answer.reply.header)
        except MalformedRequest as exc:
            raise MalformedRequest(exc.attribute, exc.reason, _installed_by(expected)) from exc
        if request.sockfd != expected or _installed_by(expected) is None:
            installed = _installed_by(expected)
            raise MalformedRequest(
                ACCEPT_NAMES[AcceptAttr.SOCKFD],
                f"names fd {request.sockfd}, but the reply installed "
                + ("none" if installed is None else f"fd {installed}"),
                installed,
            )
        return request

    # -- DONE -------------------------------------------------------------------------
    def done(
        self,
        sockfd: int,
        status: int,
        remote_auth: Iterable[int] = (),
        *,
        tags: Iterable[str] = (),
        ack: bool = True,
    ) -> None:
        """Report completion of the request on ``sockfd``.

        ``status`` is 0 or a positive errno. As tlshd does, REMOTE_AUTH and TAG go out
        only with STATUS 0, and only those the probe did not find unsupported (TAG,
        which no kernel defines, only after a probe found it supported). With ``ack``
        the kernel's verdict is read and an error raised; without it a rejection can
        only be seen later in ``late_errors``.
        """
        family_id = self._require_family()
        if not 0 <= status <= MAX_ERRNO:
            raise ValueError(f"DONE status must be 0 or a positive errno, not {status}")
        attrs: list[tuple[str, AttrValue]] = [
            (DONE_NAMES[DoneAttr.STATUS], status),
            (DONE_NAMES[DoneAttr.SOCKFD], sockfd),
        ]
        if status == 0:
            caps = self.capabilities
            peerids = [v & 0xFFFFFFFF for v in remote_auth]
            if peerids and (caps is None or caps.remote_peerids):
                attrs += [(DONE_NAMES[DoneAttr.REMOTE_AUTH], v) for v in peerids]
            tag_list = list(tags)
            if tag_list and caps is not None and caps.session_tags:
                attrs += [(DONE_NAMES[DoneAttr.TAG], t) for t in tag_list]
            elif tag_list:
                log.debug("kernel not known to accept DONE tags; dropping %s", tag_list)
        seq = next(self._seq)
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        data = encode(
            donemsg,
            msg_type=family_id,
            flags=flags,
            seq=seq,
            pid=self.channel.port_id,
            attrs=attrs,
            cmd=Command.DONE,
            version=_REQUEST_VERSION,
        )
        if ack:
            self._transact("DONE", data, seq, want_reply=False, want_ack=True)
        else:
            self._remember(seq, "DONE", data)
            self._send(data)

    def _remember(self, seq: int, command: str, data: bytes) -> None:
        """Keep unacknowledged requests so a late error can name them; bounded."""
        self._sent[seq] = (command, data)
        while len(self._sent) > _SENT_KEPT:
            del self._sent[next(iter(self._sent))]

    # -- capability probe ---------------------------------------------------------------
    def probe_optional_attributes(self) -> KernelCapabilities:
        """tlshd's probe, done right: read the ACK (EINVAL = unknown attribute,
        EBADF = parsed everything and rejected SOCKFD=-1)."""
        caps = KernelCapabilities(
            remote_peerids=self._probe((DONE_NAMES[DoneAttr.REMOTE_AUTH], 0)),
            session_tags=self._probe((DONE_NAMES[DoneAttr.TAG], PROBE_TAG)),
        )
        self.capabilities = caps
        log.debug(
            "kernel capabilities: session_tags=%s remote_peerids=%s",
            caps.session_tags,
            caps.remote_peerids,
        )
        return caps

    def _probe(self, candidate: tuple[str, AttrValue]) -> bool:
        family_id = self._require_family()
        seq = next(self._seq)
        data = encode(
            donemsg,
            msg_type=family_id,
            flags=NLM_F_REQUEST | NLM_F_ACK,
            seq=seq,
            pid=self.channel.port_id,
            attrs=[(DONE_NAMES[DoneAttr.STATUS], 0), (DONE_NAMES[DoneAttr.SOCKFD], -1), candidate],
            cmd=Command.DONE,
            version=_PROBE_VERSION,
        )
        try:
            self._transact(
                f"DONE probe ({candidate[0]})", data, seq, want_reply=False, want_ack=True
            )
        except NetlinkCommandError as exc:
            if exc.errno == errno.EINVAL:
                return False
            if exc.errno == errno.EBADF:
                return True
            raise
        return True  # an ACK of 0 would also mean the attribute was accepted

    # -- request/answer engine ----------------------------------------------------------
    def _send(self, data: bytes) -> None:
        trace.traffic("sent", data)
        self.channel.send(data)

    def _recv(self, timeout: float | None) -> bytes | None:
        data = self.channel.recv(timeout)
        if data is not None:
            trace.traffic("received", data)
        return data

    def _transact(
        self, command: str, data: bytes, seq: int, *, want_reply: bool, want_ack: bool
    ) -> _Answer:
        self._sent[seq] = (command, data)
        try:
            self._send(data)
            answer = _Answer()
            deadline = time.monotonic() + self.reply_timeout
            while True:
                left = deadline - time.monotonic()
                try:
                    datagram = self._recv(left) if left > 0 else None
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    log.warning("netlink receive queue overran; READY notifications were lost")
                    self._ready.append(ReadyNotice(HandlerClass.TLSHD))
                    continue
                if datagram is None:
                    raise ReplyTimeout(command, self.reply_timeout)
                for framed in split_datagram(datagram):
                    self._absorb(framed, seq, answer)
                if (answer.reply is not None or not want_reply) and (answer.acked or not want_ack):
                    return answer
        finally:
            self._sent.pop(seq, None)

    def _absorb(self, framed: Framed, seq: int, answer: _Answer) -> None:
        hdr = framed.header
        if hdr.type == NLMSG_ERROR:
            ack = decode(framed.data, ack_class(hdr.flags), hdr)
            if ack["orig_seq"] != seq and hdr.seq != seq:
                self._late_error(ack)
                return
            if ack["error"]:
                raise self._error(ack, self._sent.get(seq, ("request", b"")))
            answer.acked = True
        elif hdr.seq == seq and not self._is_ready(framed):
            answer.reply = framed
        else:
            self._dispatch_message(framed)

    def _is_ready(self, framed: Framed) -> bool:
        raw = framed.data
        return framed.header.type == self.family_id and len(raw) > 16 and raw[16] == Command.READY

    def _dispatch_unsolicited(self, datagram: bytes) -> None:
        for framed in split_datagram(datagram):
            hdr = framed.header
            if hdr.type == NLMSG_ERROR:
                self._late_error(decode(framed.data, ack_class(hdr.flags), hdr))
            else:
                self._dispatch_message(framed)

    def _dispatch_message(self, framed: Framed) -> None:
        if self._is_ready(framed):
            try:
                self._ready.append(parse_ready(framed.data, framed.header))
            except MalformedMessage as exc:
                log.warning("ignoring malformed READY: %s", exc)
        else:
            hdr = framed.header
            log.debug("ignoring unexpected netlink message type %#x seq %d", hdr.type, hdr.seq)

    def _late_error(self, ack: Any) -> None:
        if not ack["error"]:
            return
        sent = self._sent.pop(ack["orig_seq"], ("request", b""))
        err = self._error(ack, sent)
        log.warning("kernel rejected an unacknowledged %s", err)
        self.late_errors.append(err)

    @staticmethod
    def _error(ack: Any, sent: tuple[str, bytes]) -> NetlinkCommandError:
        command, original = sent
        code = -int(ack["error"])
        attribute: str | None = None
        message: str | None = None
        if ack.get("attrs"):
            message = ack.get_attr("NLMSGERR_ATTR_MSG")
            offs = ack.get_attr("NLMSGERR_ATTR_OFFS")
            missing = ack.get_attr("NLMSGERR_ATTR_MISS_TYPE")
            if offs is not None and original:
                attribute = attribute_at(original, int(offs))
            elif missing is not None and original:
                names = DONE_NAMES if original[16] == Command.DONE else ACCEPT_NAMES
                attribute = names.get(int(missing), f"attribute {missing}")
                message = message or "missing attribute"
        return NetlinkCommandError(
            command, code, attribute=attribute, message=message, seq=int(ack["orig_seq"])
        )


def _lowest_free_fd(any_open_fd: int) -> int:
    """The number the kernel will give the next fd installed in this process."""
    probe = os.dup(any_open_fd)
    os.close(probe)
    return probe


def _installed_by(expected: int) -> int | None:
    """``expected`` if an ACCEPT reply installed a socket there, else ``None``.

    ``expected`` was free just before the ACCEPT, and the parent is single-threaded,
    so an fd there now is the one the reply brought: the only fd the caller may
    answer and close.  Any other number a reply names (stderr, the netlink socket, a
    worker's channel, a request in flight) is never touched.
    """
    try:
        mode = os.fstat(expected).st_mode
    except OSError:
        return None
    return expected if stat.S_ISSOCK(mode) else None
