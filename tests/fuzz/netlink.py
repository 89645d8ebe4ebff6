# SPDX-License-Identifier: GPL-2.0-only
"""The netlink receive path: a datagram split into messages, then READY, ACCEPT
replies and NLMSG_ERROR acks decoded as ``netlink/family.py`` does.

Expected: ``MalformedMessage`` (``MalformedRequest`` is one), the only error the
parsers document for bytes off the wire.  Seeds: docs/kernel-abi.md §WIRE layouts, as
``tests/test_netlink_codec.py`` reproduces them.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.harness import Target
from quichsd.netlink.constants import NLMSG_ERROR, NLMSG_HDRLEN, Command
from quichsd.netlink.errors import MalformedMessage, MalformedRequest
from quichsd.netlink.messages import ack_class, attribute_at, decode, split_datagram
from quichsd.netlink.requests import parse_accept_reply, parse_ready

EXPECTED = (MalformedMessage,)


def one_input(data: bytes) -> None:
    try:
        messages = split_datagram(data)
    except EXPECTED:
        return
    for framed in messages:
        hdr = framed.header
        try:
            if hdr.type == NLMSG_ERROR:
                ack = decode(framed.data, ack_class(hdr.flags), hdr)
                int(ack["error"]), int(ack["orig_seq"])
            elif len(framed.data) > NLMSG_HDRLEN and framed.data[NLMSG_HDRLEN] == Command.READY:
                parse_ready(framed.data, hdr)
            else:
                _accept(framed.data, hdr)
        except EXPECTED:
            pass
        attribute_at(framed.data, len(framed.data) // 2)  # the extended-ACK helper


def _accept(data: bytes, hdr: object) -> None:
    try:
        request = parse_accept_reply(data, hdr)  # type: ignore[arg-type]
    except MalformedRequest as exc:
        assert exc.sockfd is None or exc.sockfd >= 0, exc.sockfd
        raise
    assert request.sockfd >= 0 and isinstance(request.peer_identities, list)
    request.sockfd = -1  # a parsed number, not an fd this process owns: never close it


def _seeds() -> Iterator[bytes]:
    from test_netlink_codec import (  # the spec's bytes, one definition
        ACCEPT_REPLY,
        ACCEPT_REQUEST,
        DONE_EACCES,
        DONE_SUCCESS,
        READY,
    )

    yield from (READY, ACCEPT_REQUEST, ACCEPT_REPLY, DONE_SUCCESS, DONE_EACCES)
    yield READY + ACCEPT_REPLY  # the kernel may batch
    # An NLMSG_ERROR acking the ACCEPT request with -EAGAIN (nothing pending).
    ack = (36).to_bytes(4, "little") + NLMSG_ERROR.to_bytes(2, "little") + bytes(10)
    yield ack + (-11).to_bytes(4, "little", signed=True) + ACCEPT_REQUEST[:16]


TARGETS = (
    Target(
        name="netlink_accept",
        one_input=one_input,
        expected=EXPECTED,
        seeds=_seeds,
    ),
)
