# The two commands of the README: `make demo` and `make test`. Both first run `install`, which is
# idempotent: Debian packages (the lab's real servers and tools), then a virtual environment with the
# project and its test tools, then a separate environment for OONI's `oonidata` (its pinned, old
# dependencies must not leak into ours; the format tests call it as a subprocess).
PY ?= python3
VENV := .venv
OONI_VENV := .venv-oonidata
DEB_PACKAGES := dnsmasq-base nginx-light coturn nftables iptables iproute2 openssl procps postgresql
STAMP := $(VENV)/.installed
# The safety fence (src/msgwatch/steps/net.py): tests and benchmarks reach only loopback and the lab.
LAB_NETWORKS := 127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32

.PHONY: install demo test lint typecheck unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system.sh
	bash scripts/install-system.sh $(DEB_PACKAGES)
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(PY) -m venv $(OONI_VENV)
	$(OONI_VENV)/bin/pip install --quiet 'oonidata==0.3.0'
	touch $(STAMP)

demo: install
	$(VENV)/bin/msgwatch demo --output out/   # measurements and report in out/ (git-ignored)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

unit: install
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/pytest -q

test: lint typecheck unit

bench: install
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/run_blocked_catalogue.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/lab_up_down.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/lab_scenarios.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/calls.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/collector_raw_writes.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/collector_load.py
	$(VENV)/bin/python benchmarks/cli_startup.py

clean:
	rm -rf $(VENV) $(OONI_VENV) build *.egg-info src/*.egg-info
