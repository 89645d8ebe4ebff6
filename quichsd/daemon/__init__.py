"""The handshake daemon: netlink requests, workers, configuration, keyrings."""
