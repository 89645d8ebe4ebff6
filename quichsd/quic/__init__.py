# SPDX-License-Identifier: GPL-2.0-only
"""The Linux QUIC module's socket ABI: struct layouts, constants and typed socket options.

Nothing here opens a socket; the functions take any object shaped like one, so
the same code drives a kernel socket and the userspace model.
"""
