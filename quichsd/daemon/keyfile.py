# SPDX-License-Identifier: GPL-2.0-only
"""GLib's key-file format (``GKeyFile``), read exactly as GLib reads it.

tlshd loads its configuration with ``g_key_file_load_from_file()`` and reads
it with ``g_key_file_get_integer/string/string_list()``; a drop-in must see
the same groups, keys and values, and reject the same files.  This module is
that reader in Python, on bytes, with line numbers kept for error messages.
``tests/test_keyfile_glib.py`` holds it to GLib's own ``GKeyFile`` (a small C
program built against the installed GLib) over a corpus of files.

GLib's rules (docs/man/quichsd.conf.5 gives them to users):

* lines end at ``\\n``; a ``\\r`` just before it is dropped; a NUL ends what
  GLib reads of a line;
* leading whitespace (space, tab, LF, FF, CR: GLib's ASCII space, not VT) is
  skipped; an empty line or one starting ``#`` is a comment (``#`` later in
  a line is part of the value);
* ``[name]`` opens a group: only spaces and tabs may follow ``]``; a name is
  non-empty, without ``[``, ``]`` or control characters; a group that comes
  back is the same group (its keys merge);
* ``key=value``: whitespace around ``=`` is dropped, trailing whitespace of
  the value is kept; a key has no ``=``, ``[`` or ``]`` except one trailing
  ``[locale]`` and neither starts nor ends with a space; a key set again in
  a group takes the last value; a key before any group is an error;
* ``Encoding`` in the first group must be ``UTF-8`` (any case);
* names and raw values may be any bytes; a value read as a string must be
  UTF-8, and its escapes are ``\\s \\n \\t \\r \\\\`` (plus ``\\;`` in a list);
  any other escape, or a ``\\`` at the end, is an invalid value;
* a list is split at unescaped ``;``; an empty last item is dropped
  (``a;b;`` is two items, ``;`` one empty item, an empty value none).

tlshd loads with ``G_KEY_FILE_KEEP_COMMENTS`` only, so GLib drops ``key[ll]``
translations for languages other than the environment's; tlshd never asks
for a translated key, so keeping them all (as here) changes no value it reads.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

#: ``g_ascii_isspace()``: space, tab, line feed, form feed, carriage return (not VT).
_SPACE = b" \t\n\f\r"
_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_LIST_SEPARATOR = ";"
#: What ``g_unichar_isalnum()`` calls a letter or a digit, by Unicode category.
_ALNUM = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No"})


class ErrorCode(enum.IntEnum):
    """``GKeyFileError``'s codes, so a caller (and the differential test) can tell kinds apart."""

    UNKNOWN_ENCODING = 0
    PARSE = 1
    NOT_FOUND = 2
    KEY_NOT_FOUND = 3
    GROUP_NOT_FOUND = 4
    INVALID_VALUE = 5


class KeyFileError(ValueError):
    """A file GLib would not load, or a value GLib would not return; ``line`` says where."""

    def __init__(self, code: ErrorCode, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.code = code
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Entry:
    """A key's raw value (bytes after ``=`` and its leading whitespace) and its line."""

    raw: bytes
    line: int


@dataclass(frozen=True)
class Repeat:
    """A key set twice in a group: GLib keeps the later value silently; we can tell."""

    group: str
    key: str
    earlier: int
    later: int


def _name(raw: bytes) -> str:
    """Group and key names as text; bytes that are not UTF-8 survive (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def _show(raw: bytes) -> str:
    return repr(raw.decode("utf-8", "backslashreplace"))


def _is_group_name(name: bytes) -> bool:
    return bool(name) and not any(b in b"[]" or b < 0x20 or b == 0x7F for b in name)


def _locale_end(key: bytes, start: int) -> int:
    """Index past the locale characters from ``start`` (letters, digits, ``-_.@``)."""
    i = start
    while i < len(key):
        if key[i] in b"-_.@":
            i += 1
            continue
        lead = key[i]
        width = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        try:
            char = key[i : i + width].decode("utf-8")
        except UnicodeDecodeError:
            return i
        if len(char) != 1 or unicodedata.category(char) not in _ALNUM:
            return i
        i += width
    return i


def _is_key_name(key: bytes) -> bool:
    end = len(key)
    stop = next((i for i, b in enumerate(key) if b in b"=[]"), end)
    if stop == 0 or key[0] == 0x20 or key[stop - 1] == 0x20:
        return False
    if stop < end and key[stop] == ord("["):
        close = _locale_end(key, stop + 1)
        if close >= end or key[close] != ord("]"):
            return False
        stop = close + 1
    return stop == end


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(number, line): split at LF, a CR before the LF dropped."""
    pieces = data.split(b"\n")
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        if index < last and piece.endswith(b"\r"):
            piece = piece[:-1]
        yield index + 1, piece


def _unescape(text: str, as_list: bool) -> list[str]:
    """The value with GLib's escapes resolved; split at ``;`` when ``as_list``."""
    pieces: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise KeyFileError(ErrorCode.INVALID_VALUE, "escape character at end of value")
            if nxt in _ESCAPES:
                current.append(_ESCAPES[nxt])
            elif as_list and nxt == _LIST_SEPARATOR:
                current.append(nxt)
            else:
                raise KeyFileError(ErrorCode.INVALID_VALUE, f"invalid escape sequence '\\{nxt}'")
        elif as_list and char == _LIST_SEPARATOR:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    if current or not as_list:
        pieces.append("".join(current))
    return pieces


@dataclass
class KeyFile:
    """A loaded key file: group → key → ``Entry``, in the order GLib lists them."""

    groups: dict[bytes, dict[bytes, Entry]] = field(default_factory=dict)
    repeats: list[Repeat] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> KeyFile:
        """``g_key_file_load_from_data()``; ``KeyFileError`` with the line if GLib refuses."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        keyfile = cls()
        current: dict[bytes, Entry] | None = None
        current_name = b""
        first: dict[bytes, Entry] | None = None
        for number, full in _lines(data):
            line = full.split(b"\0", 1)[0]
            start = line.lstrip(_SPACE)
            if not start or start.startswith(b"#"):
                continue
            close = start.find(b"]")
            if start.startswith(b"[") and close > 0 and not start[close + 1 :].strip(b" \t"):
                # GLib takes the name up to the line's last "]", past a NUL if there is one.
                rest = full[len(line) - len(start) :]
                name = rest[1 : rest.rindex(b"]")].split(b"\0", 1)[0]
                if not _is_group_name(name):
                    raise KeyFileError(
                        ErrorCode.PARSE, f"invalid section name {_show(name)}", number
                    )
                current, current_name = keyfile.groups.setdefault(name, {}), name
                if first is None:
                    first = current
                continue
            equals = start.find(b"=")
            if equals <= 0:
                raise KeyFileError(
                    ErrorCode.PARSE,
                    f"expected 'key=value' or '[section]', got {_show(start.rstrip(_SPACE))}",
                    number,
                )
            key = start[:equals].rstrip(_SPACE)
            raw = start[equals + 1 :].lstrip(_SPACE)
            if current is None:
                raise KeyFileError(
                    ErrorCode.GROUP_NOT_FOUND,
                    f"key {_show(key)} comes before any [section]",
                    number,
                )
            if not _is_key_name(key):
                raise KeyFileError(ErrorCode.PARSE, f"invalid key name {_show(key)}", number)
            if current is first and key == b"Encoding" and raw.lower() != b"utf-8":
                raise KeyFileError(
                    ErrorCode.UNKNOWN_ENCODING, f"unsupported encoding {_show(raw)}", number
                )
            earlier = current.get(key)
            if earlier is not None:
                keyfile.repeats.append(
                    Repeat(_name(current_name), _name(key), earlier.line, number)
                )
            current[key] = Entry(raw, number)
        return keyfile

    def group_names(self) -> list[str]:
        return [_name(group) for group in self.groups]

    def keys(self, group: str) -> list[str]:
        return [_name(key) for key in self._group(group)]

    def entry(self, group: str, key: str) -> Entry:
        """The raw value and line (``g_key_file_get_value()``)."""
        entry = self._group(group).get(key.encode("utf-8", "surrogateescape"))
        if entry is None:
            raise KeyFileError(ErrorCode.KEY_NOT_FOUND, f"no key {key!r} in [{group}]")
        return entry

    def raw_text(self, group: str, key: str) -> str:
        """The raw value as text, as ``g_key_file_get_integer()`` parses it (no escapes)."""
        entry = self.entry(group, key)
        try:
            return entry.raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFileError(
                ErrorCode.UNKNOWN_ENCODING, "value is not valid UTF-8", entry.line
            ) from None

    def string(self, group: str, key: str) -> str:
        """``g_key_file_get_string()``: UTF-8, escapes resolved."""
        return self._unescaped(group, key, as_list=False)[0]

    def string_list(self, group: str, key: str) -> list[str]:
        """``g_key_file_get_string_list()``: split at unescaped ``;``, escapes resolved."""
        return self._unescaped(group, key, as_list=True)

    def _unescaped(self, group: str, key: str, as_list: bool) -> list[str]:
        text = self.raw_text(group, key)
        try:
            return _unescape(text, as_list)
        except KeyFileError as exc:
            raise KeyFileError(exc.code, exc.message, self.entry(group, key).line) from None

    def _group(self, group: str) -> dict[bytes, Entry]:
        keys = self.groups.get(group.encode("utf-8", "surrogateescape"))
        if keys is None:
            raise KeyFileError(ErrorCode.GROUP_NOT_FOUND, f"no group [{group}]")
        return keys
