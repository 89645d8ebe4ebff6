"""Only here because setuptools takes ``cffi_modules`` from setup() alone."""

from setuptools import setup

setup(cffi_modules=["quichsd/tls/_build.py:ffibuilder"])
