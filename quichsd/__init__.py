"""quichsd: a TLS handshake agent for Linux kernel sockets (QUIC and kTLS)."""

__version__ = "0.1.0"
