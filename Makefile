# Two commands: `make run` starts a working filter; `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LISTEN ?=

.PHONY: run test test-deps lint venv clean messages

venv: $(BIN)/.installed

# The venv's full build output (venv, pip, apt-get) goes to INSTALL_LOG; the terminal gets one line, or on
# failure the log's last 30 lines. LOGGED runs a command into the log and stops make if it fails.
INSTALL_LOG := $(VENV)/install.log
LOGGED = logged() { "$$@" >>$(INSTALL_LOG) 2>&1 || { echo "make: failed: $$*; the last lines of $(INSTALL_LOG):" >&2; \
  tail -n 30 $(INSTALL_LOG) >&2; exit 1; }; }

$(BIN)/.installed: pyproject.toml setup.py icap_server/protocol/_speedups.c
	@mkdir -p $(VENV) && : >$(INSTALL_LOG) && echo "setting up $(VENV) (a few minutes the first time); full log: $(INSTALL_LOG)"
	@$(LOGGED); $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then logged apt-get update -qq && logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "python3-venv is missing: sudo apt-get install python3-venv" >&2; exit 1; fi; }
	@# The C quick scan needs gcc and Python's headers; without them it is left out and the Python twin answers.
	@$(LOGGED); { command -v gcc >/dev/null 2>&1 && $(PYTHON) -c 'import os, sysconfig, sys; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; } || { \
	  if [ "$$(id -u)" = 0 ]; then logged apt-get update -qq && logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev; \
	  else echo "no C compiler or Python headers (sudo apt-get install gcc python3-dev): the pure-Python quick scan will answer" >&2; fi; }
	@$(LOGGED); logged $(PYTHON) -m venv $(VENV)
	@$(LOGGED); logged $(BIN)/pip install --upgrade pip
	@$(LOGGED); logged $(BIN)/pip install -e '.[fast,embedded,test]'
	@touch $@

# Start the filter on 127.0.0.1:1344 (server.listen) with the embedded Redis (./var) and the default category lists,
# after a short banner: the address, the store and the squid.conf lines to paste (scripts/run-banner.py).
run: venv
	@BIN=$(BIN) $(BIN)/python scripts/run-banner.py $(LISTEN)
	@exec $(BIN)/clearance serve $(if $(LISTEN),--listen $(LISTEN))

# Squid (the TLS-capable build, for the ssl-bump test), c-icap-client, curl and headless Chromium (with CJK
# fonts for the block page) are real peers in the tests; as root, install them if missing.
test-deps:
	@missing=""; \
	{ /usr/sbin/squid -v 2>/dev/null || squid -v 2>/dev/null; } | grep -q -- '--with-openssl' || missing="$$missing squid-openssl"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v c-icap-client >/dev/null 2>&1 || missing="$$missing c-icap"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (sudo apt-get install$$missing); those tests will skip" >&2; fi; \
	fi

# The one catalog: extract the messages of blockpages/ and icap_server/portal/ (pages and e-mail) and merge them
# into blockpages' zh_HK catalog (read at start-up; no compiled .mo to rebuild). Then translate the new entries.
messages: venv
	mkdir -p build
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k alt --no-location --omit-header -o build/messages.pot .
	$(BIN)/pybabel update -i build/messages.pot -d blockpages/locale -l zh_HK --ignore-obsolete

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The request path's tests once more with the C quick scan hidden: the pure-Python twin must answer the same.
QUICK_OFF_TESTS = tests/test_quick_answers.py tests/test_quick_scan.py tests/test_server.py tests/test_blockpages_icap.py \
	tests/test_tenant_restrictions.py tests/test_access_log.py tests/test_slow_clients.py tests/test_cicap_client.py \
	tests/test_e2e_squid.py

test: venv test-deps lint
	$(BIN)/pytest
	CLEARANCE_NO_SPEEDUPS=1 $(BIN)/pytest -q -m "not speedups" $(QUICK_OFF_TESTS)

clean:
	rm -rf $(VENV) build *.egg-info

# Benchmark Clearance beside c-icap + srv_url_check, a pyicap filter and a bare asyncio floor: one table
# (bench/run.py; as root, installs c-icap and its url_check module if missing). BENCH_ARGS="--only clearance".
.PHONY: bench
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# `make deb`: build/clearance_VERSION_ARCH.deb (dpkg-deb) with a virtualenv at /opt/clearance (Debian's python3,
# the project's wheel with the fast and embedded extras), /usr/bin/clearance, the systemd unit, the config
# /etc/clearance/config.yaml and a `clearance` system user (packaging/). The build's output goes to DEB_LOG;
# the terminal gets the package's path, or on failure the log's last 30 lines.
DEB_PYTHON ?= /usr/bin/python3
DEB_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_FILE := build/clearance_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_LOG := build/deb.log

.PHONY: deb
deb:
	@mkdir -p build && echo "building $(DEB_FILE) (a few minutes); full log: $(DEB_LOG)"
	@sh packaging/build-deb.sh '$(DEB_VERSION)' '$(DEB_ARCH)' '$(DEB_PYTHON)' '$(DEB_FILE)' >$(DEB_LOG) 2>&1 || { \
	  echo "make: failed: packaging/build-deb.sh; the last lines of $(DEB_LOG):" >&2; tail -n 30 $(DEB_LOG) >&2; exit 1; }
	@echo $(DEB_FILE)
