# SPDX-License-Identifier: GPL-2.0-only
"""pyroute2's netlink message classes without the rest of pyroute2.

The codec uses pyroute2's ``pyroute2.netlink`` classes only (nlmsg, genlmsg, nla;
messages.py).  Importing any submodule first runs the package's ``__init__``, which
imports the whole library: 160 modules (IPRoute, NDB with sqlite3, ipset, nl80211,
multiprocessing, ssl ...), about 65 ms and 10 MiB in the daemon's parent before it
can join the group (docs/startup.md).  So, when nothing in the process has imported
pyroute2 yet, the package is registered from its own spec without running its
``__init__``; the submodules then import as usual.  The first access to a name the
package itself exports (``pyroute2.IPRoute``) runs the real ``__init__`` in place, so
any other code in the process still sees the whole library.
"""

from __future__ import annotations

import importlib.util
import sys


def register_pyroute2_package() -> None:
    """Makes ``import pyroute2.netlink`` load that subpackage alone (see module doc)."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the import below says so itself
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> object:
        # The real __init__, on the first name this stand-in lacks; submodules already
        # imported stay as they are.
        delattr(package, "__getattr__")
        loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

    setattr(package, "__getattr__", complete)  # noqa: B010 (PEP 562: the module's own)
    sys.modules["pyroute2"] = package


register_pyroute2_package()


__all__ = ["register_pyroute2_package"]
