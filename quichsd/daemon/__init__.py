# SPDX-License-Identifier: GPL-2.0-only
"""The handshake daemon: netlink requests, workers, configuration, keyrings."""
