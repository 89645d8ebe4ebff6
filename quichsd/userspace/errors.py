# SPDX-License-Identifier: GPL-2.0-only
"""Errors the model raises where the kernel returns an errno."""

from __future__ import annotations

import os


def fail(err: int, detail: str) -> OSError:
    """An OSError for ``err`` (``OSError`` picks the subclass, e.g. BlockingIOError for EAGAIN).

    The text is the usual strerror plus why the model refused, which the
    kernel cannot say but a test failure should.
    """
    return OSError(err, f"{os.strerror(err)} (model: {detail})")
