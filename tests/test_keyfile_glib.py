# SPDX-License-Identifier: GPL-2.0-only
"""quichsd.daemon.keyfile against GLib's own GKeyFile, file by file.

A small C program (tests/glib/keyfile_dump.c), built here against the installed
GLib (libglib2.0-dev, which scripts/bootstrap installs), loads each file of the
corpus with ``g_key_file_load_from_data()`` and prints what tlshd's getters
return; our reader must accept and reject the same files (with the same
GKeyFileError code) and give the same groups, keys, raw values, strings and
lists, errors included.  The corpus: hand-written cases for every rule, then
files put together at random from the same kinds of lines.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from quichsd.daemon.keyfile import KeyFile, KeyFileError

HERE = Path(__file__).parent

#: One file's reading: ("error", code), or [(group, [(key, raw, string, list)])] with
#: string = ("ok", text) | ("error", code) and list = ("ok", items) | ("error", code).
Reading = object

CORPUS: dict[str, bytes] = {
    "empty": b"",
    "only comments": b"# one\n  # two\n\n\t\n",
    "plain": b"[debug]\nloglevel=1\ntls=4\n",
    "no final newline": b"[a]\nk=v",
    "crlf": b"[a]\r\nk=v\r\n",
    "cr kept inside": b"[a]\nk=v\r\r\nj=w\r",
    "cr alone at the end of a group line": b"[a]\r",
    "whitespace around =": b"[a]\n  k \t=\t v \t\n",
    "vertical tab is not space": b"[a]\nk\x0b=\x0bv\n",
    "form feed is space": b"[a]\n\x0ck\x0c=\x0cv\n",
    "hash inside a value": b"[a]\nk=a # not a comment\n",
    "equals in a value": b"[a]\nk==1=2\n",
    "empty value": b"[a]\nk=\n",
    "escapes": b"[a]\nk=\\s\\t\\n\\r\\\\x\\s\n",
    "escaped separator in a string": b"[a]\nk=a\\;b\n",
    "unknown escape": b"[a]\nk=1\\q\n",
    "escape at the end": b"[a]\nk=x\\\n",
    "escape of a non-ASCII character": b"[a]\nk=\\\xc3\xa9\n",
    "keyrings as in the issue": b"[authenticate]\nkeyrings=a\\;b;c\n",
    "list with trailing separator": b"[a]\nk=a;b;\n",
    "list of one empty item": b"[a]\nk=;\n",
    "list with an empty item": b"[a]\nk=a;;b\n",
    "list items keep spaces": b"[a]\nk= .mykeys; other ;\n",
    "escaped backslash before separator": b"[a]\nk=a\\\\;b\n",
    "escapes in list items": b"[a]\nk=\\\\;\\;;\\s\n",
    "repeated key: last wins": b"[a]\nk=1\nj=2\nk=3\n",
    "repeated group merges": b"[a]\nk=1\n[b]\nk=2\n[a]\nj=3\nk=4\n",
    "group name with spaces": b"[ a b ]\nk=1\n",
    "spaces and tabs after ]": b"[a] \t \nk=1\n",
    "text after ]": b"[a] x\n",
    "key after ] is not a group": b"[a] x=1\n",
    "group then = before any group": b"[a]=b\n",
    "empty group name": b"[]\n",
    "nested bracket": b"[a[b]\n",
    "two closing brackets": b"[a]]\n",
    "tab in a group name": b"[a\tb]\n",
    "DEL in a group name": b"[a\x7f]\n",
    "unit separator in a group name": b"[a\x1f]\n",
    "non-ASCII space in a group name": "[a\u00a0b]\n".encode(),
    "UTF-8 names and values": "[grüße]\nschlüssel=wert ✓\n".encode(),
    "invalid UTF-8 in names": b"[a\xff]\nk\xfe=1\n",
    "invalid UTF-8 in a value": b"[a]\nk=\xff\n",
    "invalid UTF-8 and a bad escape": b"[a]\nk=\xff\\q\n",
    "overlong UTF-8 in a value": b"[a]\nk=\xc0\xaf\n",
    "surrogate in a value": b"[a]\nk=\xed\xa0\x80\n",
    "noncharacter in a value": b"[a]\nk=\xef\xbf\xbe\n",
    "invalid UTF-8 in a comment": b"# \xff\xfe\n[a]\nk=1\n",
    "byte order mark": b"\xef\xbb\xbf[a]\nk=1\n",
    "key before any group": b"loglevel=1\n[debug]\n",
    "line without =": b"[debug]\nnonsense line\n",
    "line starting with =": b"[a]\n=v\n",
    "key with space inside": b"[a]\na b=1\n",
    "key with control character": b"[a]\nk\x01=1\n",
    "key with ]": b"[a]\nk]=1\n",
    "key with a locale": b"[a]\nk[de_DE.UTF-8@euro]=1\nk=2\n",
    "key with an empty locale": b"[a]\nk[]=1\n",
    "key with a non-ASCII locale": b"[a]\nk[\xc3\xa9]=1\n",
    "key with a bad locale": b"[a]\nk[x y]=1\n",
    "key with invalid UTF-8 locale": b"[a]\nk[\xff]=1\n",
    "key with text after the locale": b"[a]\nk[de]x=1\n",
    "space before the locale": b"[a]\nk [de]=1\n",
    "tab before the locale": b"[a]\nk\t[de]=1\n",
    "Encoding UTF-8": b"[a]\nEncoding=utf-8\n",
    "Encoding other": b"[a]\nEncoding=latin1\n",
    "Encoding with trailing space": b"[a]\nEncoding=UTF-8 \n",
    "Encoding in a later group": b"[a]\n[b]\nEncoding=latin1\n",
    "Encoding in the first group again": b"[a]\n[b]\n[a]\nEncoding=latin1\n",
    "NUL ends a value": b"[a]\nk=1\x00=2\n",
    "NUL line is a comment": b"[a]\n\x00k=1\n",
    "NUL after a group": b"[a]\x00\n",
    "NUL then ] after a group": b"[a]\x00x]\n",
    "NUL before =": b"[a]\nk\x00=1\n",
    "a tlshd file": (
        b"[debug]\nloglevel=1\ntls=4\nnl=2\n\n[authenticate]\nkeyrings=.mykeys;other\n\n"
        b"[authenticate.client]\nx509.truststore=/etc/pki/ca.pem\n"
        b"x509.private_key=pkcs11:token=x;object=key\n"
    ),
}

#: Lines the random files are made of: every rule above in one line or two.
FRAGMENTS: list[bytes] = [
    b"[a]",
    b"[b]",
    b" [a] ",
    b"[a b]",
    b"[]",
    b"[a]x",
    b"k=v",
    b"k = v ",
    b"j=1",
    b"k=a\\;b;c",
    b"k=;",
    b"k=a;;",
    b"k=\\s\\t\\n\\r\\\\",
    b"k=\\q",
    b"k=x\\",
    b"k=\xff",
    b"k=\xc3\xa9",
    b"\xc3\xa9=1",
    b"k[de]=1",
    b"k[]=1",
    b"k [x]=1",
    b"Encoding=UTF-8",
    b"Encoding=x",
    b"# comment",
    b"  # comment",
    b"",
    b" \t",
    b"=v",
    b"noequals",
    b"k]=1",
    b"a b=c",
    b"k=\x00x",
    b"\x00",
    b"k=v\r",
    b"k\x0b=v",
]


def _random_files(count: int, seed: int = 10) -> list[bytes]:
    rng = random.Random(seed)
    files = []
    for _ in range(count):
        lines = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.7:
            lines.insert(0, b"[a]")
        text = rng.choice([b"\n", b"\r\n"]).join(lines)
        if rng.random() < 0.2 and text:  # one byte changed anywhere
            at = rng.randrange(len(text))
            text = text[:at] + bytes([rng.choice(b"[]=;\\#\n\r\t \x00\xff")]) + text[at + 1 :]
        files.append(text)
    return files


def _glib_flags() -> list[str] | None:
    """gcc flags for GLib, or None without gcc, pkg-config or libglib2.0-dev."""
    if shutil.which("pkg-config") is None or shutil.which("gcc") is None:
        return None
    found = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "glib-2.0"], capture_output=True, text=True
    )
    return found.stdout.split() if found.returncode == 0 else None


GLIB_FLAGS = _glib_flags()
needs_glib = pytest.mark.skipif(
    GLIB_FLAGS is None,
    reason="needs gcc, pkg-config and libglib2.0-dev (scripts/bootstrap installs them)",
)


@pytest.fixture(scope="module")
def glib_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The helper, built against the installed GLib."""
    assert GLIB_FLAGS is not None
    binary = tmp_path_factory.mktemp("glib") / "keyfile_dump"
    source = HERE / "glib" / "keyfile_dump.c"
    subprocess.run(["gcc", "-O1", "-Wall", "-o", str(binary), str(source), *GLIB_FLAGS], check=True)
    return binary


def _unhex(token: str) -> bytes:
    return b"" if token == "-" else bytes.fromhex(token)


def glib_readings(binary: Path, files: list[bytes]) -> list[Reading]:
    """What GLib makes of each file (duplicate keys listed once, as ours are)."""
    stdin = b"".join(b"%d\n%s" % (len(data), data) for data in files)
    out = subprocess.run([str(binary)], input=stdin, capture_output=True, check=True).stdout
    readings: list[Reading] = []
    groups: list[tuple[bytes, list[tuple[bytes, bytes, object, object]]]] = []
    key = raw = string = b""
    for line in out.decode().splitlines():
        kind, *rest = line.split(" ")
        if kind == "case":
            groups = []
            readings.append(groups)
        elif kind == "error":
            readings[-1] = ("error", int(rest[0]))
        elif kind == "group":
            groups.append((_unhex(rest[0]), []))
        elif kind == "key":
            key = _unhex(rest[0])
        elif kind == "value":
            raw = _unhex(rest[0])
        elif kind == "string":
            string = ("error", int(rest[1])) if rest[0] == "error" else ("ok", _unhex(rest[0]))
        elif kind == "list":
            items = ("error", int(rest[1])) if rest[0] == "error" else ("ok", rest[1:])
            if items[0] == "ok":
                items = ("ok", [_unhex(t) for t in rest[1:]])
            keys = groups[-1][1]
            if all(k != key for k, *_ in keys):
                keys.append((key, raw, string, items))
    return readings


def our_reading(data: bytes) -> Reading:
    try:
        keyfile = KeyFile.parse(data)
    except KeyFileError as exc:
        assert exc.line is not None, "a file we refuse names the line"
        return ("error", int(exc.code))
    groups = []
    for group in keyfile.group_names():
        keys = []
        for key in keyfile.keys(group):
            try:
                string: object = ("ok", keyfile.string(group, key).encode())
            except KeyFileError as exc:
                string = ("error", int(exc.code))
            try:
                items: object = ("ok", [i.encode() for i in keyfile.string_list(group, key)])
            except KeyFileError as exc:
                items = ("error", int(exc.code))
            name = key.encode("utf-8", "surrogateescape")
            keys.append((name, keyfile.entry(group, key).raw, string, items))
        groups.append((group.encode("utf-8", "surrogateescape"), keys))
    return groups


@needs_glib
def test_the_corpus_reads_as_glib_reads_it(glib_dump: Path) -> None:
    names = list(CORPUS)
    theirs = glib_readings(glib_dump, [CORPUS[n] for n in names])
    assert len(theirs) == len(names)
    differ = {
        name: (CORPUS[name], ours, glib)
        for name, glib in zip(names, theirs, strict=True)
        if (ours := our_reading(CORPUS[name])) != glib
    }
    assert not differ, differ
    # The corpus reaches every kind of outcome, so agreeing above means something.
    kinds = {str(r[1]) if isinstance(r, tuple) else "loaded" for r in theirs}
    assert kinds >= {"loaded", "0", "1", "4"}, kinds


@needs_glib
def test_random_files_read_as_glib_reads_them(glib_dump: Path) -> None:
    files = _random_files(3000)
    theirs = glib_readings(glib_dump, files)
    differ = [
        (data, ours, glib)
        for data, glib in zip(files, theirs, strict=True)
        if (ours := our_reading(data)) != glib
    ]
    assert not differ, differ[:5]
    loaded = sum(1 for r in theirs if not isinstance(r, tuple))
    assert 300 < loaded < 2700, f"{loaded} of 3000 loaded: the mix tests both sides"


def test_what_tlshd_reads_from_the_issue_example() -> None:
    keyfile = KeyFile.parse(b"[authenticate]\nkeyrings=a\\;b;c\n")
    assert keyfile.string_list("authenticate", "keyrings") == ["a;b", "c"]
    keyfile = KeyFile.parse(b"[debug]\ntls=1\n[x]\n[debug]\ntls=2\n")
    assert keyfile.entry("debug", "tls").raw == b"2"
    assert [(r.group, r.key, r.earlier, r.later) for r in keyfile.repeats] == [
        ("debug", "tls", 2, 5)
    ]
