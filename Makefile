# SPDX-License-Identifier: GPL-2.0-only
# Two commands on a fresh Debian machine: `make run` (the main job) and `make test`.
VENV := .venv
STAMP := $(VENV)/.bootstrapped
PYTEST_ARGS ?=

.PHONY: run test test-fast lint bench bench-daemon clean install-service

$(STAMP): pyproject.toml setup.py quichsd/tls/_build.py quichsd/tls/_glue.c quichsd/tls/_events.c scripts/bootstrap
	scripts/bootstrap
	touch $@

run: $(STAMP)
	scripts/run

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check quichsd tests $(wildcard bench)
	$(VENV)/bin/python -m mypy quichsd

# Every floor: in memory, the userspace models, and the real kernel in a VM (which
# downloads Debian sid's kernel and tools on first use; see vm/README.md), with quichsd on
# sid's userland (the same Python and GnuTLS as tlshd there); then the VM floor again with
# quichsd on the host's userland (the systemd boot only runs on it, so is not repeated); then
# the non-VM floors in the sid chroot: both GnuTLS lines on every run.
test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
	QUICHSD_VM_USERLAND=host $(VENV)/bin/python -m pytest -m vm tests/vm \
		--ignore=tests/vm/test_systemd_unit.py $(PYTEST_ARGS)
	vm/chroot-test $(PYTEST_ARGS)

# The quick floors only (no VM, no multi-second bursts): for the edit-test loop.
test-fast: lint
	$(VENV)/bin/python -m pytest -m "not vm and not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/engine.py

bench-daemon: $(STAMP)
	$(VENV)/bin/python bench/daemon.py

# The unit (ExecStart= naming .venv/bin/quichsd), /etc/tlshd/config if absent, the man
# pages; under $(DESTDIR) when set.  Then: systemctl daemon-reload && systemctl enable --now quichsd
install-service: $(STAMP)
	$(VENV)/bin/quichsd install-service $(if $(DESTDIR),--destdir "$(DESTDIR)")

clean:
	rm -rf $(VENV) build bench/build quichsd/tls/_gnutls*.so quichsd/tls/_gnutls.c quichsd/tls/_events*.so quichsd/tls/*.o

# Boots Debian sid's kernel under QEMU (vm/README.md; needs root) and shows NVMe/TCP over
# TLS served by quichsd: each handshake's log line and the data check.
.PHONY: vm-demo
vm-demo: $(STAMP)
	vm/demo

# Long fuzz campaigns (tests/fuzz/): each target in turn until FUZZ_RUNS executions or
# FUZZ_TIME seconds, new inputs and crashes under build/fuzz; prints executions and
# executions per second per target.  `make fuzz FUZZ_TARGETS="config channel"` for some.
FUZZ_RUNS ?= 1000000
FUZZ_TIME ?= 1800
FUZZ_TARGETS ?=
.PHONY: fuzz
fuzz: $(STAMP)
	$(VENV)/bin/python tests/fuzz/run.py --all --runs $(FUZZ_RUNS) --time $(FUZZ_TIME) $(FUZZ_TARGETS)
