# SPDX-License-Identifier: GPL-2.0-only
"""Test support that is not installed: fixtures, fault injection and harnesses only the
tests, bench/ and the VM floor use (importable from a checkout as ``tests.support``)."""
