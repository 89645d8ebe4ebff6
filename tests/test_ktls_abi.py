# SPDX-License-Identifier: GPL-2.0-only
"""kTLS ABI: crypto_info layouts byte by byte, key material mapping, priorities, install order.

Layouts and offsets are the tables of
docs/kernel-abi.md §KTLS-CONSTANTS, §KTLS-STRUCTS and §KTLS-KEYS;
the install sequence is docs/kernel-abi.md §KTLS-SEQUENCE with the quiet record-size fallback; the
priority strings are docs/tlshd-compat.md §TCP-PRIORITIES.  Installing runs against a fake
setsockopt.
"""

from __future__ import annotations

import errno
import logging
import struct

import pytest

from quichsd.ktls.abi import (
    LAYOUTS,
    SOL_TCP,
    SOL_TLS,
    TCP_ULP,
    TLS_1_2_VERSION,
    TLS_1_3_VERSION,
    TLS_RX,
    TLS_TX,
    TLS_TX_MAX_PAYLOAD_LEN,
    CryptoInfo,
    CryptoInfoError,
    KtlsCipher,
    crypto_info_from_state,
    payload_limit,
)
from quichsd.ktls.install import KtlsInstallError, KtlsMaterial, install_ktls
from quichsd.ktls.priority import (
    PriorityKind,
    priority_cache,
    priority_strings,
    priority_text,
    psk_kind,
    system_ciphers,
)
from quichsd.tls.binding import TlsSetupError

IV, KEY16, KEY32, SALT, SEQ = (
    bytes(range(0x10, 0x18)),
    bytes(range(0x20, 0x30)),
    bytes(range(0x40, 0x60)),
    b"\xa0\xa1\xa2\xa3",
    b"\x00\x00\x00\x00\x00\x00\x01\x02",
)


# -- layouts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cipher", "size"),
    [(51, 40), (52, 56), (53, 40), (54, 56), (55, 40), (56, 40), (57, 40), (58, 56)],
)
def test_struct_sizes_per_cipher(cipher: int, size: int) -> None:
    assert LAYOUTS[cipher].size == size
    assert LAYOUTS[cipher].tag == 16
    assert LAYOUTS[cipher].rec_seq == 8


def _fields(blob: bytes, spans: list[tuple[int, int]]) -> list[bytes]:
    return [blob[offset : offset + size] for offset, size in spans]


@pytest.mark.parametrize("cipher", [KtlsCipher.AES_GCM_128, KtlsCipher.AES_CCM_128])
def test_aes_128_layout_offsets(cipher: int) -> None:
    blob = CryptoInfo(TLS_1_3_VERSION, cipher, IV, KEY16, SALT, SEQ).pack()
    assert len(blob) == 40
    assert struct.unpack_from("=HH", blob) == (0x0304, cipher)
    assert _fields(blob, [(4, 8), (12, 16), (28, 4), (32, 8)]) == [IV, KEY16, SALT, SEQ]


def test_aes_gcm_256_layout_offsets() -> None:
    blob = CryptoInfo(TLS_1_3_VERSION, 52, IV, KEY32, SALT, SEQ).pack()
    assert len(blob) == 56
    assert struct.unpack_from("=HH", blob) == (0x0304, 52)
    assert _fields(blob, [(4, 8), (12, 32), (44, 4), (48, 8)]) == [IV, KEY32, SALT, SEQ]


def test_chacha20_layout_offsets() -> None:
    iv12 = bytes(range(0x70, 0x7C))
    blob = CryptoInfo(TLS_1_3_VERSION, 54, iv12, KEY32, b"", SEQ).pack()
    assert len(blob) == 56
    assert struct.unpack_from("=HH", blob) == (0x0304, 54)
    assert _fields(blob, [(4, 12), (16, 32), (48, 8)]) == [iv12, KEY32, SEQ]


def test_header_is_host_order() -> None:
    blob = CryptoInfo(TLS_1_3_VERSION, 51, IV, KEY16, SALT, SEQ).pack()
    # x86_64 and aarch64 are little-endian: 0x0304 is stored 04 03, cipher 51 as 33 00.
    if struct.pack("=H", 1) == b"\x01\x00":
        assert blob[:4] == b"\x04\x03\x33\x00"


@pytest.mark.parametrize("cipher", [51, 52, 53, 54])
def test_unpack_round_trips(cipher: int) -> None:
    layout = LAYOUTS[cipher]
    info = CryptoInfo(
        TLS_1_3_VERSION,
        cipher,
        bytes(layout.iv),
        bytes([7]) * layout.key,
        bytes([9]) * layout.salt,
        SEQ,
    )
    assert CryptoInfo.unpack(info.pack()) == info


def test_wrong_sizes_are_refused() -> None:
    with pytest.raises(CryptoInfoError, match="key must be 16"):
        CryptoInfo(TLS_1_3_VERSION, 51, IV, KEY32, SALT, SEQ)
    with pytest.raises(CryptoInfoError, match="takes 40 bytes"):
        CryptoInfo.unpack(CryptoInfo(TLS_1_3_VERSION, 51, IV, KEY16, SALT, SEQ).pack() + b"\0")
    with pytest.raises(CryptoInfoError, match="unknown kTLS cipher"):
        CryptoInfo(TLS_1_3_VERSION, 99, IV, KEY16, SALT, SEQ)


# -- key material (docs/kernel-abi.md §KTLS-KEYS) --------------------------------------------------


def test_tls13_aes_splits_the_static_iv() -> None:
    static = bytes(range(12))
    for cipher, key in ((51, KEY16), (52, KEY32), (53, KEY16)):
        info = crypto_info_from_state(TLS_1_3_VERSION, cipher, static, key, SEQ)
        assert info.salt == static[0:4]
        assert info.iv == static[4:12]
        assert info.key == key
        assert info.rec_seq == SEQ
        assert info.nonce_base() == static


def test_tls13_chacha_takes_the_whole_iv() -> None:
    static = bytes(range(12))
    info = crypto_info_from_state(TLS_1_3_VERSION, 54, static, KEY32, SEQ)
    assert (info.iv, info.salt, info.key, info.rec_seq) == (static, b"", KEY32, SEQ)


def test_tls12_rows() -> None:
    implicit = b"\x01\x02\x03\x04"
    gcm = crypto_info_from_state(TLS_1_2_VERSION, 51, implicit, KEY16, SEQ)
    assert (gcm.version, gcm.iv, gcm.salt, gcm.rec_seq) == (0x0303, SEQ, implicit, SEQ)
    chacha = crypto_info_from_state(TLS_1_2_VERSION, 54, bytes(12), KEY32, SEQ)
    assert (chacha.iv, chacha.salt) == (bytes(12), b"")


def test_uninstallable_material_is_refused() -> None:
    with pytest.raises(CryptoInfoError, match="cannot be installed"):
        crypto_info_from_state(TLS_1_3_VERSION, 55, bytes(12), KEY16, SEQ)
    with pytest.raises(CryptoInfoError, match="12 bytes"):
        crypto_info_from_state(TLS_1_3_VERSION, 51, bytes(8), KEY16, SEQ)
    with pytest.raises(CryptoInfoError, match="no kTLS layout"):
        crypto_info_from_state(0x0302, 51, bytes(12), KEY16, SEQ)


@pytest.mark.parametrize(
    ("version", "peer_limit", "expected"),
    [
        (TLS_1_3_VERSION, None, 16384),
        (TLS_1_3_VERSION, 16385, 16384),
        (TLS_1_3_VERSION, 513, 512),
        (TLS_1_3_VERSION, 64, 63),  # the kernel (min 64) refuses this one: EIO
        (TLS_1_2_VERSION, 1024, 1024),
        (TLS_1_2_VERSION, 20000, 16384),
    ],
)
def test_payload_limit_from_record_size_limit(
    version: int, peer_limit: int | None, expected: int
) -> None:
    assert payload_limit(version, peer_limit) == expected


# -- priorities (docs/tlshd-compat.md §TCP-PRIORITIES) ---------------------------------------------

BASE = "-COMP-ALL:-VERS-ALL:+VERS-TLS1.3:%NO_TICKETS"


def test_priority_strings_follow_tlshd() -> None:
    order = (52, 54, 51, 53)  # AES-256-GCM, ChaCha20, AES-128-GCM, AES-128-CCM
    strings = priority_strings(order)
    x509 = BASE + ":-CIPHER-ALL:+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-GCM:+AES-128-CCM"
    assert strings[PriorityKind.X509] == x509
    assert strings[PriorityKind.PSK] == x509 + ":+PSK:+DHE-PSK:+ECDHE-PSK"
    assert strings[PriorityKind.PSK_SHA256] == (
        BASE + ":-CIPHER-ALL:+AES-128-GCM:+AES-128-CCM:+DHE-PSK:+ECDHE-PSK"
    )
    assert strings[PriorityKind.PSK_SHA384] == (
        BASE + ":-CIPHER-ALL:+AES-256-GCM:+CHACHA20-POLY1305:+DHE-PSK:+ECDHE-PSK"
    )


def test_known_groups_go_before_the_cipher_reset() -> None:
    strings = priority_strings((51,), ("X25519-MLKEM768",))
    assert strings[PriorityKind.X509] == (BASE + ":+GROUP-X25519-MLKEM768:-CIPHER-ALL:+AES-128-GCM")


def test_system_ciphers_keep_the_system_order() -> None:
    found = system_ciphers()
    assert found, "the system default priority allows no kTLS cipher"
    assert set(found) <= {51, 52, 53, 54}
    assert len(set(found)) == len(found)


@pytest.mark.parametrize("kind", list(PriorityKind))
def test_gnutls_accepts_every_list(kind: PriorityKind) -> None:
    assert priority_cache(kind) is priority_cache(kind)  # built once
    assert priority_text(kind).startswith(BASE)


@pytest.mark.parametrize(
    ("identity", "key_length", "kind"),
    [
        (b"host-a", 32, PriorityKind.PSK_SHA256),
        (b"host-a", 48, PriorityKind.PSK_SHA384),
        (b"host-a", 20, PriorityKind.PSK),
        (b"NVMe0R01 nqn.host nqn.subsys", 48, PriorityKind.PSK_SHA256),
        (b"NVMe1R02 nqn.host nqn.subsys digest", 32, PriorityKind.PSK_SHA384),
        (b"NVMe-not-an-identity", 32, PriorityKind.PSK_SHA256),
    ],
)
def test_psk_list_selection(identity: bytes, key_length: int, kind: PriorityKind) -> None:
    assert psk_kind(identity, key_length) is kind


def test_nvme_identity_with_unknown_hash_is_eio() -> None:
    with pytest.raises(TlsSetupError) as info:
        psk_kind(b"NVMe0R03 nqn.host nqn.subsys", 32)
    assert info.value.errno == errno.EIO


# -- installing (docs/kernel-abi.md §KTLS-SEQUENCE) with a fake setsockopt -------------------------


class FakeSocket:
    def __init__(self, failures: dict[tuple[int, int], int] | None = None) -> None:
        self.calls: list[tuple[int, int, bytes]] = []
        self.failures = failures or {}

    def setsockopt(self, level: int, optname: int, value: int | bytes, /) -> None:
        assert isinstance(value, bytes)
        self.calls.append((level, optname, value))
        code = self.failures.get((level, optname))
        if code is not None:
            raise OSError(code, "fake")


def _material(cipher: int = 52, limit: int = 16384) -> KtlsMaterial:
    key = bytes(LAYOUTS[cipher].key)
    tx = crypto_info_from_state(TLS_1_3_VERSION, cipher, bytes(range(12)), key, bytes(8))
    rx = crypto_info_from_state(TLS_1_3_VERSION, cipher, bytes(range(12, 24)), key, bytes(8))
    return KtlsMaterial(TLS_1_3_VERSION, cipher, tx, rx, payload_limit=limit)


def test_install_order_ulp_limit_tx_rx() -> None:
    sock = FakeSocket()
    material = _material(52, 1000)
    report = install_ktls(sock, material)
    assert [(level, opt) for level, opt, _ in sock.calls] == [
        (SOL_TCP, TCP_ULP),
        (SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN),
        (SOL_TLS, TLS_TX),
        (SOL_TLS, TLS_RX),
    ]
    assert sock.calls[0][2] == b"tls\0"
    assert sock.calls[1][2] == struct.pack("=H", 1000)
    assert sock.calls[2][2] == material.tx.pack() and len(sock.calls[2][2]) == 56
    assert sock.calls[3][2] == material.rx.pack()
    assert report.payload_limit_set and report.payload_limit == 1000


def test_no_ktls_in_the_kernel_is_eio_with_a_clear_reason() -> None:
    sock = FakeSocket({(SOL_TCP, TCP_ULP): errno.ENOENT})
    with pytest.raises(KtlsInstallError) as info:
        install_ktls(sock, _material())
    assert info.value.errno == errno.EIO
    assert info.value.cause == errno.ENOENT
    assert info.value.strerror == "kernel has no kTLS (TCP_ULP tls: ENOENT)"
    assert len(sock.calls) == 1


def test_old_kernel_without_record_size_option_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    sock = FakeSocket({(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN): errno.ENOPROTOOPT})
    with caplog.at_level(logging.DEBUG, logger="quichsd.ktls.install"):
        report = install_ktls(sock, _material(limit=16384))
    assert not report.payload_limit_set
    assert [opt for _, opt, _ in sock.calls] == [TCP_ULP, TLS_TX_MAX_PAYLOAD_LEN, TLS_TX, TLS_RX]
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "TLS_TX_MAX_PAYLOAD_LEN" in caplog.records[0].getMessage()


def test_old_kernel_cannot_honour_a_peer_limit() -> None:
    sock = FakeSocket({(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN): errno.ENOPROTOOPT})
    with pytest.raises(KtlsInstallError) as info:
        install_ktls(sock, _material(limit=512))
    assert info.value.errno == errno.EIO
    assert "the peer limits records to 512 bytes" in str(info.value.strerror)
    assert [opt for _, opt, _ in sock.calls] == [TCP_ULP, TLS_TX_MAX_PAYLOAD_LEN]


def test_limit_refused_by_the_kernel_is_eio() -> None:
    sock = FakeSocket({(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN): errno.EINVAL})
    with pytest.raises(KtlsInstallError) as info:
        install_ktls(sock, _material(limit=63))
    assert info.value.errno == errno.EIO
    assert info.value.step == "TLS_TX_MAX_PAYLOAD_LEN 63"


def test_rx_is_not_installed_when_tx_fails() -> None:
    sock = FakeSocket({(SOL_TLS, TLS_TX): errno.EINVAL})
    with pytest.raises(KtlsInstallError) as info:
        install_ktls(sock, _material(53))
    assert info.value.step == "TLS_TX"
    assert "kernel does not support it" in str(info.value.strerror)
    assert [opt for _, opt, _ in sock.calls][-1] == TLS_TX


def test_rx_failure_is_eio() -> None:
    sock = FakeSocket({(SOL_TLS, TLS_RX): errno.EBADF})
    with pytest.raises(KtlsInstallError) as info:
        install_ktls(sock, _material(54))
    assert info.value.errno == errno.EIO
    assert "no longer valid" in str(info.value.strerror)


def test_unsupported_cipher_touches_nothing() -> None:
    sock = FakeSocket()
    material = _material(51)
    odd = KtlsMaterial(material.version, 55, material.tx, material.rx)
    with pytest.raises(KtlsInstallError, match="not supported"):
        install_ktls(sock, odd)
    assert sock.calls == []
