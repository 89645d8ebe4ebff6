# SPDX-License-Identifier: GPL-2.0-only
"""Only here because setuptools takes ``cffi_modules`` and ``ext_modules`` from setup() alone."""

from setuptools import Extension, setup

setup(
    cffi_modules=[
        "quichsd/tls/_build.py:ffibuilder",
        "quichsd/daemon/_privilege_build.py:ffibuilder",
    ],
    # The engine's events built in C; optional: quichsd/tls/records.py does it in Python.
    ext_modules=[
        Extension(
            "quichsd.tls._events",
            ["quichsd/tls/_events.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ],
)
