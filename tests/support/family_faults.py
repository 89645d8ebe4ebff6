# SPDX-License-Identifier: GPL-2.0-only
"""Faults the family model can play on an ACCEPT: what a broken kernel (or a fault
campaign) would send, so tests can show the agent answers each and leaks nothing.

A fault applies to the next ACCEPT that finds a pending request (``FamilyModel.
inject_accept_fault``).  ``error`` plays the kernel failing to install the fd
(EMFILE when the agent's fd table is full): the kernel completes that request
with EIO itself and returns the errno, and it sends no further READY for the
requests still queued (docs/kernel-abi.md §ACCEPT).  The other fields mangle
the reply: which SOCKFD attributes it carries (``PLACEHOLDER`` is the fd that
comes with the reply, as ``ModelChannel`` installs it), attributes left out,
and whether an fd comes with it at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from quichsd.netlink.constants import AcceptAttr
from quichsd.netlink.messages import ACCEPT_NAMES, AttrValue

#: In ``AcceptFault.sockfd``: the fd installed with the reply.
PLACEHOLDER = -1


@dataclass(frozen=True)
class AcceptFault:
    """How the model mangles one ACCEPT (see the module doc)."""

    error: int = 0
    sockfd: tuple[int, ...] = (PLACEHOLDER,)
    omit: frozenset[int] = frozenset()
    install: bool = True

    def attrs(self, regular: list[tuple[str, AttrValue]]) -> list[tuple[str, AttrValue]]:
        """The reply's attributes: ``regular`` with SOCKFD replaced and ``omit`` left out."""
        sockfd_name = ACCEPT_NAMES[AcceptAttr.SOCKFD]
        names = {ACCEPT_NAMES[n] for n in self.omit}
        kept = [(n, v) for n, v in regular if n != sockfd_name and n not in names]
        return [(sockfd_name, fd) for fd in self.sockfd] + kept


__all__ = ["PLACEHOLDER", "AcceptFault"]
