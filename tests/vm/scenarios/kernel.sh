#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# The guest kernel has what the floor needs: the handshake generic-netlink family (seen by the
# host's iproute2 `genl`, through pyroute2 and by quichsd's own resolver in the userland under test),
# the tls module with /proc/net/tls_stat, and the sid chroot's tools.
set -u
. "$VM_ROOT/vm/guest/lib.sh"

vm_step "kernel"
fact release "$(uname -r)"
fact cmdline_init "$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^init=//p')"
fact nproc "$(nproc)"

vm_step "genl"
genl ctrl get name handshake || die "genl: no handshake family"
fact genl_group_tlshd "$(handshake_group_id)"

# USERLAND: whose Python reads the family: "sid" (the sid venv in the chroot, vm/sid-venv) or
# "host" (the checkout's .venv from the guest root)
vm_step "python (${USERLAND:=sid} userland)"
if [ "$USERLAND" = sid ]; then
    sid_up
    [ -e "$SID$SID_VENV/.complete" ] || die "no $SID_VENV in the chroot (vm/fetch)"
    PYRUN="sid python -"
else
    PYRUN="$VM_ROOT/.venv/bin/python -"
fi
$PYRUN <<'PY' || die "python: handshake family"
import sys

import pyroute2
from pyroute2.netlink import genlmsg
from pyroute2.netlink.generic import GenericNetlinkSocket

from quichsd.netlink.family import HandshakeFamily
from quichsd.tls.binding import gnutls_version

s = GenericNetlinkSocket()
s.bind("handshake", genlmsg)
print("@@ pyroute2_family_id", s.prid)
print("@@ pyroute2_groups", " ".join(f"{k}={v}" for k, v in sorted(s.mcast_groups.items())))
s.close()
print("@@ pyroute2_version", pyroute2.__version__)
print("@@ python_version", ".".join(map(str, sys.version_info[:3])))
print("@@ gnutls_version", gnutls_version())
with HandshakeFamily.open_kernel() as f:
    print("@@ quichsd_family_id", f.family_id)
    print("@@ quichsd_groups", " ".join(f"{k}={v}" for k, v in sorted(f.groups.items())))
    caps = f.probe_optional_attributes()
    print("@@ caps", f"remote_peerids={caps.remote_peerids} session_tags={caps.session_tags}")
PY

vm_step "tls"
[ -e /proc/net/tls_stat ] && die "tls_stat before the module is loaded?"
modprobe tls || die "modprobe tls"
[ -r /proc/net/tls_stat ] || die "no /proc/net/tls_stat after modprobe tls"
fact tls_stat_lines "$(wc -l < /proc/net/tls_stat)"
fact tls_module "$(grep -c '^tls ' /proc/modules)"

vm_step "sid chroot"
sid_up
fact sid_tlshd "$(sid sh -c 'tlshd -v 2>&1 | head -1')"
fact sid_nvme "$(sid nvme version | head -1)"
vm_step "done"
fact ok 1
