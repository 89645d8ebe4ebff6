# SPDX-License-Identifier: GPL-2.0-only
"""Coverage-guided fuzz targets (atheris) for the code that reads untrusted bytes.

Each target (``harness.Target``) feeds one input to one parser or state machine
and tells expected failures (the documented error types) from crashes: any other
exception, or a broken invariant, escapes and the fuzzer reports it.  Corpora live
in ``corpus/<target>/``; ``run.py`` runs one target or all of them (``make fuzz``);
``tests/test_fuzz.py`` runs each briefly in the normal suite.  Findings become named
tests in ``tests/test_fuzz_regressions.py``.
"""
