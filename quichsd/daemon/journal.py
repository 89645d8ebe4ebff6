# SPDX-License-Identifier: GPL-2.0-only
"""Where the daemon's log goes: journald (structured), syslog, stderr.

* Under systemd (``JOURNAL_STREAM`` is set, or journald's socket exists) every
  record goes to the journal as fields, through systemd-python's
  ``JournalHandler`` and libsystemd.  A handshake's record carries ``QUICHSD_*`` fields (see
  ``HandshakeRecord.fields()``) so ``journalctl QUICHSD_STATUS=110`` finds the
  timeouts.
* Elsewhere, syslog (``/dev/log``, facility ``auth`` like tlshd) when there is
  one.
* ``-s``: plain text on stderr as well; stderr too when nothing else exists.
  Each line carries its level: ``quichsd[PID]: warning: ...``, or sd-daemon's
  ``<N>`` prefix when stderr is the journal's stream (``JOURNAL_STREAM`` names
  it), which journald turns into the record's priority.

Names that come from the network or the request (peer names, certificate
subjects, PSK identities, ALPN, reasons quoting them) are escaped in every line
and field (``escape``): a control character or newline in a peer name cannot
forge or split a log line.

A record never holds key material: the fields are built from the request's
metadata and the outcome's names (cipher, ALPN, the peer's certificate
subject or PSK identity), never from keys, secrets or certificates' bytes.

``QUICHSD_JOURNAL_SINK=PATH`` (for tests and debugging) replaces the journal by
a file that receives each record's fields as one JSON object per line.
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import logging.handlers
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from quichsd.tls.levels import CIPHER_SUITE_NAMES
from quichsd.tls.modes import AuthMode

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_SOCKET = Path("/dev/log")
SINK_ENV = "QUICHSD_JOURNAL_SINK"
IDENTIFIER = "quichsd"
#: LOG_AUTH, as tlshd opens syslog with.
SYSLOG_FACILITY = 4
#: ``logging`` record attribute holding a record's extra journal fields.
FIELDS_ATTR = "quichsd_fields"
#: MESSAGE_ID of handshake records (journalctl MESSAGE_ID=...): success and failure.
MESSAGE_ID_SUCCEEDED = "5f1a8e3c2b7d4c0e9a6b1d2c3e4f5a60"
MESSAGE_ID_FAILED = "5f1a8e3c2b7d4c0e9a6b1d2c3e4f5a61"

_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)

Fields = dict[str, str]
Sender = Callable[[Fields], None]


def escape(text: str) -> str:
    """``text`` with every non-printable character (controls, newlines, DEL, C1, format
    characters) as ``\\xNN`` / ``\\uNNNN``: one line, nothing for a terminal to act on.
    Backslashes stay as they are, so escaping twice changes nothing."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def peer_address(fd: int) -> str | None:
    """The connected peer of socket ``fd`` as tlshd logs it (``192.0.2.1:2049``,
    ``[2001:db8::1]:4420``); None for anything but a connected IPv4/IPv6 socket.
    Borrows the fd (it stays open)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        host, port = sock.getpeername()[:2]
    except OSError:
        return None
    finally:
        sock.detach()
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def priority_of(levelno: int) -> int:
    """The syslog priority for a ``logging`` level (DEBUG and below: 7)."""
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


# -- one record per handshake --------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeRecord:
    """How one request ended, as the parent knows it at DONE time."""

    request_id: int
    transport: str
    role: str
    auth_mode: int
    peername: str | None
    status: int
    reason: str
    duration: float
    cipher: int = 0
    alpn: str | None = None
    peer: str | None = None
    resumed: bool = False
    #: The peer's IP address and port (``peer_address``), when the socket has one.
    address: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == 0

    @property
    def level(self) -> int:
        return logging.INFO if self.succeeded else logging.WARNING

    def message(self) -> str:
        """One line, as tlshd's: who (peer name and address), how it ended, how long."""
        ms = self.duration * 1000
        with_whom = escape(self.peername or "-")
        if self.address:
            with_whom += f" ({self.address})"
        head = f"request {self.request_id}: {self.transport} {self.role} handshake with {with_whom}"
        if self.succeeded:
            return (
                f"{head} succeeded: cipher {cipher_name(self.cipher)}, "
                f"ALPN {escape(self.alpn or '-')}, peer {escape(self.peer or '-')}, "
                f"resumed {yes_no(self.resumed)}, {ms:.1f} ms"
            )
        return (
            f"{head} failed: {escape(self.reason or '-')} (status {self.status}, "
            f"{errno.errorcode.get(self.status, '?')}), {ms:.1f} ms"
        )

    def fields(self) -> Fields:
        """The ``QUICHSD_*`` journal fields (all strings; absent when unknown)."""
        fields: Fields = {
            "MESSAGE_ID": MESSAGE_ID_SUCCEEDED if self.succeeded else MESSAGE_ID_FAILED,
            "QUICHSD_REQUEST": str(self.request_id),
            "QUICHSD_TRANSPORT": self.transport,
            "QUICHSD_ROLE": self.role,
            "QUICHSD_AUTH": auth_name(self.auth_mode),
            "QUICHSD_STATUS": str(self.status),
            "QUICHSD_DURATION_MS": f"{self.duration * 1000:.3f}",
        }
        if self.peername:
            fields["QUICHSD_PEERNAME"] = escape(self.peername)
        if self.address:
            fields["QUICHSD_PEER_ADDRESS"] = self.address
        if self.succeeded:
            fields["QUICHSD_CIPHER"] = cipher_name(self.cipher)
            fields["QUICHSD_ALPN"] = escape(self.alpn or "")
            fields["QUICHSD_PEER"] = escape(self.peer or "")
            fields["QUICHSD_RESUMED"] = yes_no(self.resumed)
        else:
            fields["QUICHSD_ERRNO"] = errno.errorcode.get(self.status, str(self.status))
            if self.reason:
                fields["QUICHSD_REASON"] = escape(self.reason)
        return {key: value for key, value in fields.items() if value != ""}


def yes_no(flag: bool) -> str:
    """How every output spells a yes/no outcome (``resumed yes``), as the manual CLI does."""
    return "yes" if flag else "no"


def cipher_name(cipher: int) -> str:
    return CIPHER_SUITE_NAMES.get(cipher, str(cipher) if cipher else "-")


def auth_name(auth_mode: int) -> str:
    """The kernel's auth mode in lower case (``unauth``, ``psk``, ``x509``)."""
    try:
        return AuthMode(auth_mode).name.lower()
    except ValueError:
        return str(auth_mode)


def log_handshake(logger: logging.Logger, record: HandshakeRecord) -> None:
    """One log record for a finished request; journald gets its fields.

    The level is checked first: ``logger.log``'s arguments (text, fields) would be built
    even for a record it then drops.
    """
    level = record.level
    if logger.isEnabledFor(level):
        logger.log(level, "%s", record.message(), extra={FIELDS_ATTR: record.fields()})


# -- journald --------------------------------------------------------------------------------------


def under_journald(
    environ: Mapping[str, str] | None = None, journal_socket: Path = JOURNAL_SOCKET
) -> bool:
    """Started by systemd with stderr on the journal, or journald listening here."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM")) or journal_socket.exists()


def _journald(fields: Fields) -> None:
    """To journald through libsystemd (systemd-python's ``sendv``)."""
    journal = importlib.import_module("systemd.journal")  # by name: see ``journal_handler``
    journal.sendv(*(f"{key}={value}" for key, value in fields.items()))


class JsonLinesSink:
    """Records as JSON objects, one a line, appended to ``path`` (tests, debugging)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, fields: Fields) -> None:
        line = json.dumps(fields, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class FieldSender:
    """systemd-python's ``JournalHandler`` builds MESSAGE (our ``EscapingFormatter``),
    PRIORITY and the code location and calls this with the record's attributes too;
    this keeps the journal fields among them, adds a record's ``QUICHSD_*`` fields
    (escaped) and its process as SYSLOG_PID (a worker's, for the records a worker
    sent its parent), and hands the result to ``send``."""

    KEPT = ("PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY", "CODE_FILE", "CODE_FUNC", "LOGGER")

    def __init__(self, send: Sender) -> None:
        self.send = send

    def __call__(self, message: str, /, **attributes: object) -> None:
        fields: Fields = {"MESSAGE": message}
        fields.update({key: str(attributes[key]) for key in self.KEPT if key in attributes})
        fields["SYSLOG_PID"] = str(attributes.get("process") or os.getpid())
        fields["CODE_LINE"] = str(attributes.get("CODE_LINE", 0))
        extra = attributes.get(FIELDS_ATTR)
        if isinstance(extra, Mapping):
            fields.update({str(k): escape(str(v)) for k, v in extra.items()})
        self.send(fields)


def handler_for(send: Sender) -> logging.Handler:
    """systemd-python's ``JournalHandler``, its records as fields to ``send``."""
    # By name: the repository's systemd/ folder (unit files) must not pass for the package.
    journal = importlib.import_module("systemd.journal")
    handler: logging.Handler = journal.JournalHandler(
        sender_function=FieldSender(send),
        SYSLOG_IDENTIFIER=IDENTIFIER,
        SYSLOG_FACILITY=str(SYSLOG_FACILITY),
    )
    handler.setFormatter(EscapingFormatter())
    return handler


# -- setup ---------------------------------------------------------------------------------------

_TEXT_FORMAT = "quichsd[%(process)d]: %(message)s"
_LEVEL_TEXT_FORMAT = "quichsd[%(process)d]: %(levelword)s: %(message)s"
#: sd-daemon(3)'s prefix: journald reads the priority from it (SyslogLevelPrefix=yes).
_JOURNAL_STREAM_FORMAT = "<%(priority)d>%(message)s"
_OURS = "_quichsd_handler"
_LEVEL_WORDS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class EscapingFormatter(logging.Formatter):
    """Formats the message with its arguments, then escapes it (``escape``); also offers
    ``%(priority)d`` (syslog) and ``%(levelword)s`` (``warning``) to the format.
    A traceback appended after it keeps its newlines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        values = dict(record.__dict__)
        values["message"] = escape(record.message)
        values["priority"] = priority_of(record.levelno)
        values["levelword"] = _LEVEL_WORDS.get(record.levelno, record.levelname.lower())
        return str(self._style._fmt) % values


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """``JOURNAL_STREAM`` (``DEVICE:INODE``) names the stream that ``fd`` is."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def _mark(handler: logging.Handler) -> logging.Handler:
    setattr(handler, _OURS, True)
    return handler


def journal_handler(environ: Mapping[str, str] | None = None) -> logging.Handler | None:
    """The journal handler this environment calls for, or None.

    Only the parent logs: it sets this up after starting the fork server, so no
    worker holds libsystemd's journal socket; workers send their records to it
    (daemon/worker.py)."""
    env = os.environ if environ is None else environ
    sink = env.get(SINK_ENV)
    if sink:
        return handler_for(JsonLinesSink(Path(sink)))
    if not under_journald(env):
        return None
    return handler_for(_journald)


def _syslog_handler() -> logging.Handler | None:
    if not SYSLOG_SOCKET.exists():
        return None
    try:
        handler = logging.handlers.SysLogHandler(
            address=str(SYSLOG_SOCKET), facility=logging.handlers.SysLogHandler.LOG_AUTH
        )
    except OSError:
        return None
    handler.setFormatter(EscapingFormatter(_TEXT_FORMAT))  # the priority travels apart
    return handler


def configure(level: int, to_stderr: bool, environ: Mapping[str, str] | None = None) -> list[str]:
    """Installs the ``quichsd`` logger's handlers; names the destinations chosen.

    Replaces the handlers an earlier call installed (and only those); ``set_level``
    alone changes the level (a reload).
    """
    root = logging.getLogger("quichsd")
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    chosen: list[tuple[str, logging.Handler]] = []
    journal = journal_handler(environ)
    if journal is not None:
        chosen.append(("journal", journal))
    else:
        syslog = _syslog_handler()
        if syslog is not None:
            chosen.append(("syslog", syslog))
    if to_stderr or not chosen:
        stream = logging.StreamHandler()
        to_journal = stderr_is_journal(environ)
        stream.setFormatter(
            EscapingFormatter(_JOURNAL_STREAM_FORMAT if to_journal else _LEVEL_TEXT_FORMAT)
        )
        chosen.append(("stderr", stream))
    for _name, handler in chosen:
        root.addHandler(_mark(handler))
    return [name for name, _handler in chosen]


def level_for(loglevel: int) -> int:
    """``[debug] loglevel``: above 0, debug records too (tlshd's meaning)."""
    return logging.DEBUG if loglevel > 0 else logging.INFO


def set_level(level: int) -> None:
    """The ``quichsd`` logger's level (``[debug] loglevel`` after a reload).

    A worker calls this for every job: ``setLevel`` empties the cache of every logger
    under the module lock, so it runs only when the level changes."""
    logger = logging.getLogger("quichsd")
    if logger.level != level:
        logger.setLevel(level)
