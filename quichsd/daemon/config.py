# SPDX-License-Identifier: GPL-2.0-only
"""tlshd's configuration file, read unchanged, plus our own ``[quichsd]`` section.

Format: GLib key-file (``[section]``, ``key=value``, ``#`` comments, ``;``
separated lists).  Locations as tlshd: ``-c PATH``, else the legacy
``/etc/tlshd.conf`` if it exists, else ``/etc/tlshd/config``.

Where tlshd is lax we are strict, because a silently ignored typo in a TLS
configuration is a security problem: a malformed line or a bad value is a
``ConfigError`` naming the file, line and key.  Unknown keys are kept as
warnings (tlshd ignores them, and a drop-in must load any file tlshd loads).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints

from quichsd.daemon.keyfile import KeyFile, KeyFileError

PRIMARY_PATH = Path("/etc/tlshd/config")
LEGACY_PATH = Path("/etc/tlshd.conf")

_X509_KEYS = (
    "x509.truststore",
    "x509.crl",
    "x509.certificate",
    "x509.private_key",
    "x509.pq.certificate",
    "x509.pq.private_key",
)
#: Every number has a finite range (quichsd.conf(5)): a value that switches a bound off
#: (``inf``, a fork bomb of workers) is refused at start with its file and line.
MAX_WORKERS = 128
#: Handshakes one worker runs at once (the pool's concurrency), by default and at most
#: (``[quichsd] handshakes_per_worker``): fewer isolates requests better, costs memory.
HANDSHAKES_PER_WORKER = 64
_INT_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("debug", "loglevel"): (0, 100),
    ("debug", "tls"): (0, 99),
    ("debug", "nl"): (0, 100),
    ("debug", "delay_done"): (0, 3600),
    ("quichsd", "workers"): (0, MAX_WORKERS),
    ("quichsd", "worker_recycle"): (1, 1_000_000_000),
    ("quichsd", "handshakes_per_worker"): (1, HANDSHAKES_PER_WORKER),
}
#: (lowest, highest) seconds; the lowest itself is excluded.
_FLOAT_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("quichsd", "handshake_timeout"): (0.0, 3600.0),
    ("quichsd", "shutdown_grace"): (0.0, 600.0),
    ("quichsd", "worker_idle_timeout"): (0.0, 86400.0),
}
_INT_KEYS = set(_INT_RANGES)
_FLOAT_KEYS = set(_FLOAT_RANGES)
#: Longest path the kernel takes (PATH_MAX with its NUL) and longest name in it.
_PATH_MAX = 4095
_NAME_MAX = 255
_URL = re.compile(r"[a-z][a-z0-9+.-]*:")
#: sun_path holds 108 bytes with the terminating NUL.
_SOCKET_PATH_MAX = 107
_SIDES = ("authenticate.client", "authenticate.server")
_STRING_KEYS = {("quichsd", "status_socket")} | {(s, k) for s in _SIDES for k in _X509_KEYS}
_LIST_KEYS = {("authenticate", "keyrings")}
KNOWN_KEYS = _INT_KEYS | _FLOAT_KEYS | _STRING_KEYS | _LIST_KEYS


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class X509Files:
    """One side's ``[authenticate.client]`` or ``[authenticate.server]`` files."""

    truststore: Path | None = None
    crl: Path | None = None
    certificate: Path | None = None
    private_key: str | None = None  # a path, or a GnuTLS URL such as pkcs11:...
    pq_certificate: Path | None = None
    pq_private_key: str | None = None

    def as_text(self) -> dict[str, str | None]:
        """Every file by field name, as text (the worker channel's form)."""
        return {f.name: _text_or_none(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_text(cls, raw: object) -> X509Files:
        """``as_text``'s inverse; TypeError for anything else (unknown or missing
        names, values that are not text)."""
        if not isinstance(raw, dict):
            raise TypeError(f"X.509 files are a mapping, not {type(raw).__name__}")
        values: dict[str, Path | str | None] = {}
        for name, value in raw.items():
            if value is not None and not isinstance(value, str):
                raise TypeError(f"X.509 file {name!r} is not text")
            values[name] = Path(value) if value is not None and name in _PATH_FIELDS else value
        return cls(**values)  # type: ignore[arg-type]


#: The X509Files fields that hold a path (the others may hold a GnuTLS URL).
_PATH_FIELDS = frozenset(
    name for name, hint in get_type_hints(X509Files).items() if hint == Path | None
)


def _text_or_none(value: Path | str | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class DaemonConfig:
    """A loaded configuration; immutable so handshakes in flight keep theirs on reload."""

    path: Path | None = None
    loglevel: int = 0
    tls_debug: int = 0
    netlink_debug: int = 0
    delay_done: int = 0
    keyrings: tuple[str, ...] = ()
    client: X509Files = X509Files()
    server: X509Files = X509Files()
    workers: int = 0  # the most at once; 0: one per CPU, at least 2
    worker_recycle: int = 10_000
    handshakes_per_worker: int = HANDSHAKES_PER_WORKER
    handshake_timeout: float = 30.0
    shutdown_grace: float = 10.0
    #: A worker beyond the first that held no handshake this long is retired (pool.py).
    worker_idle_timeout: float = 30.0
    status_socket: Path = Path("/run/quichsd/status.sock")
    warnings: tuple[str, ...] = field(default=(), compare=False)


RawValues = dict[tuple[str, str], tuple[str | tuple[str, ...], int]]
Values = dict[str, object]


def parse_keyfile(text: str | bytes, source: str) -> tuple[RawValues, list[str]]:
    """(section, key) → (value as tlshd's GLib getter reads it, line); and warnings.

    The file is read by ``quichsd.daemon.keyfile`` exactly as GLib reads it: a
    list through ``g_key_file_get_string_list`` (``a\\;b;c`` is ``a;b`` and
    ``c``), a path through ``g_key_file_get_string`` (escapes resolved), a
    number as ``g_key_file_get_integer`` sees it (the raw text).  A key set
    twice takes the last value, as in GLib, with a warning.
    """
    try:
        keyfile = KeyFile.parse(text)
    except KeyFileError as exc:
        raise ConfigError(f"{source}:{exc.line}: {exc.message}") from None
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    # GLib ends a line at a NUL and tlshd would use what comes before it; we refuse it.
    cut_lines = {n for n, line in enumerate(data.split(b"\n"), 1) if b"\0" in line}
    values: RawValues = {}
    notes = [
        (r.later, f"[{r.group}] {r.key} set again (line {r.earlier}): the last value wins")
        for r in keyfile.repeats
    ]
    for section in keyfile.group_names():
        for key in keyfile.keys(section):
            entry = keyfile.entry(section, key)
            if (section, key) not in KNOWN_KEYS:
                notes.append((entry.line, f"unknown key [{section}] {key} ignored"))
                continue
            where = f"{source}:{entry.line}: [{section}] {key}"
            if entry.line in cut_lines:
                raise ConfigError(f"{where}: contains a NUL byte")
            try:
                values[(section, key)] = (_read(keyfile, section, key), entry.line)
            except KeyFileError as exc:
                raise ConfigError(f"{where}: {exc.message}") from None
    return values, [f"{source}:{line}: {note}" for line, note in sorted(notes)]


def _read(keyfile: KeyFile, section: str, key: str) -> str | tuple[str, ...]:
    """A known key's value through the getter tlshd uses for it."""
    if (section, key) in _LIST_KEYS:
        return tuple(keyfile.string_list(section, key))
    if (section, key) in _INT_KEYS | _FLOAT_KEYS:
        return keyfile.raw_text(section, key)
    return keyfile.string(section, key)


def _convert(values: RawValues, source: str) -> Values:
    out: Values = {}
    for (section, key), (value, number) in values.items():
        where = f"{source}:{number}: [{section}] {key}"
        if isinstance(value, tuple):  # a list key; an empty name names no keyring
            items = tuple(item for item in value if item)
            for item in items:
                _check_text(item, where)
            parsed: object = items
        elif (section, key) in _INT_KEYS:
            parsed = _integer(value, where, _INT_RANGES[(section, key)])
        elif (section, key) in _FLOAT_KEYS:
            parsed = _seconds(value, where, _FLOAT_RANGES[(section, key)])
        else:
            if not value:
                raise ConfigError(f"{where}: empty value")
            _check_path(value, where, socket=(section, key) == ("quichsd", "status_socket"))
            parsed = value
        out[f"{section}/{key}"] = parsed
    return out


def _integer(value: str, where: str, bounds: tuple[int, int]) -> int:
    try:
        parsed = int(value, 10)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if value.strip().startswith("-"):
        raise ConfigError(f"{where}: must not be negative")
    low, high = bounds
    if not low <= parsed <= high:
        raise ConfigError(f"{where}: {parsed} is outside {low}..{high}")
    return parsed


def _seconds(value: str, where: str, bounds: tuple[float, float]) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a number of seconds") from None
    low, high = bounds
    if not seconds > low:  # also NaN
        raise ConfigError(f"{where}: must be a positive number of seconds")
    if not seconds <= high:  # also inf
        raise ConfigError(f"{where}: {value} is not a number of seconds up to {high:g}")
    return seconds


def _check_text(value: str, where: str) -> None:
    """No NUL: the kernel and GnuTLS take C strings, which would end there."""
    if "\0" in value:
        raise ConfigError(f"{where}: contains a NUL byte")


def _check_path(value: str, where: str, *, socket: bool = False) -> None:
    """A value the kernel can take as a path (or, for keys, a GnuTLS URL)."""
    _check_text(value, where)
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: not valid UTF-8") from None
    if len(raw) > _PATH_MAX:
        raise ConfigError(f"{where}: {len(raw)} bytes, longer than a path may be ({_PATH_MAX})")
    url = _URL.match(value) is not None  # a GnuTLS key URL (pkcs11:...) has no names
    if not url and any(len(part) > _NAME_MAX for part in raw.split(b"/")):
        raise ConfigError(f"{where}: a name in it is longer than {_NAME_MAX} bytes")
    if socket:
        if len(raw) > _SOCKET_PATH_MAX:
            raise ConfigError(
                f"{where}: {len(raw)} bytes; a UNIX socket path holds at most {_SOCKET_PATH_MAX}"
            )
        if raw.endswith(b"/"):
            raise ConfigError(f"{where}: names a directory, not a socket")


def _side(values: Values, section: str) -> X509Files:
    def path(key: str) -> Path | None:
        value = values.get(f"{section}/{key}")
        return Path(str(value)) if value is not None else None

    def text(key: str) -> str | None:
        value = values.get(f"{section}/{key}")
        return str(value) if value is not None else None

    return X509Files(
        truststore=path("x509.truststore"),
        crl=path("x509.crl"),
        certificate=path("x509.certificate"),
        private_key=text("x509.private_key"),
        pq_certificate=path("x509.pq.certificate"),
        pq_private_key=text("x509.pq.private_key"),
    )


def _int(values: Values, key: str, default: int) -> int:
    value = values.get(key, default)
    assert isinstance(value, int)
    return value


def _float(values: Values, key: str, default: float) -> float:
    value = values.get(key, default)
    assert isinstance(value, int | float)
    return float(value)


def parse_config(
    text: str | bytes, source: str = "<config>", path: Path | None = None
) -> DaemonConfig:
    raw, warnings = parse_keyfile(text, source)
    values = _convert(raw, source)
    base = DaemonConfig()
    keyrings = values.get("authenticate/keyrings", ())
    assert isinstance(keyrings, tuple)
    return DaemonConfig(
        path=path,
        loglevel=_int(values, "debug/loglevel", 0),
        tls_debug=_int(values, "debug/tls", 0),
        netlink_debug=_int(values, "debug/nl", 0),
        delay_done=_int(values, "debug/delay_done", 0),
        keyrings=keyrings,
        client=_side(values, "authenticate.client"),
        server=_side(values, "authenticate.server"),
        workers=_int(values, "quichsd/workers", base.workers),
        worker_recycle=_int(values, "quichsd/worker_recycle", base.worker_recycle),
        handshakes_per_worker=_int(
            values, "quichsd/handshakes_per_worker", base.handshakes_per_worker
        ),
        handshake_timeout=_float(values, "quichsd/handshake_timeout", base.handshake_timeout),
        shutdown_grace=_float(values, "quichsd/shutdown_grace", base.shutdown_grace),
        worker_idle_timeout=_float(values, "quichsd/worker_idle_timeout", base.worker_idle_timeout),
        status_socket=Path(str(values.get("quichsd/status_socket", base.status_socket))),
        warnings=tuple(warnings),
    )


def load_config(path: Path | None = None) -> DaemonConfig:
    """Loads ``path``, or tlshd's locations in tlshd's order."""
    if path is not None:
        return _load(path)
    if LEGACY_PATH.exists():
        config = _load(LEGACY_PATH)
        note = f"{LEGACY_PATH} is deprecated: move it to {PRIMARY_PATH}"
        return dataclasses.replace(config, warnings=(*config.warnings, note))
    return _load(PRIMARY_PATH)


def _load(path: Path) -> DaemonConfig:
    try:
        text = path.read_bytes()  # bytes, as GLib reads them: only values must be UTF-8
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file (use -c PATH)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, str(path), path)
