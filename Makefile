# The two commands of the README: `make demo` and `make test`. Both first run `install`, which is
# idempotent: `install-system` (Debian packages: the lab's real servers and tools; needs root when
# one is missing), then `install-python` (a virtual environment with the project and its test tools,
# and a separate environment for OONI's `oonidata`: its pinned, old dependencies must not leak into
# ours; the format tests call it as a subprocess). `make lint` and `make typecheck` need only
# `install-python`, so they run without root.
PY ?= python3
VENV := .venv
OONI_VENV := .venv-oonidata
DEB_PACKAGES := gcc libc6-dev python3-dev dnsmasq-base nginx-light coturn nftables iptables iproute2 openssl procps postgresql openjdk-17-jre-headless chromium fonts-dejavu-core \
	tor obfs4proxy openvpn wireguard-go wireguard-tools shadowsocks-libev dante-server microsocks tinyproxy
STAMP := $(VENV)/.installed
NATIVE := $(VENV)/.compiled
NATIVE_SOURCES := $(shell find src/msgwatch/analysis src/msgwatch/measurement src/msgwatch/catalogue -name '*.py') src/msgwatch/_native.py
# The fence (msgwatch.fence.LAB_NETWORKS): tests and benchmarks reach only loopback and the lab.
LAB_NETWORKS := 127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32

.PHONY: install install-system install-python demo test lint typecheck unit bench clean

install: install-system install-python

install-system:
	bash scripts/install-system.sh $(DEB_PACKAGES)

install-python: $(STAMP) $(NATIVE)

$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,spark]'
	$(PY) -m venv $(OONI_VENV)
	$(OONI_VENV)/bin/pip install --quiet 'oonidata==0.3.0'
	touch $(STAMP)

# The analysis's per-measurement modules (msgwatch._native.COMPILED) compiled with mypyc beside
# their sources, in the environment that has every dependency mypyc type-checks against (pip's
# isolated build above has none, so it builds the package pure). Again, from nothing, whenever a
# source they may depend on changes (msgwatch._native.TRACKED; until then the sources are run,
# never an old build); the stamp only when the build is current.
$(NATIVE): $(STAMP) setup.py $(NATIVE_SOURCES)
	rm -rf build src/msgwatch/native.json
	find src/msgwatch -name '*.so' -delete   # a module no longer compiled leaves no extension
	$(VENV)/bin/python setup.py --quiet build_ext --inplace
	$(VENV)/bin/python -c "from msgwatch import _native; raise SystemExit(_native.build_state() != 'current')" \
		|| { echo "msgwatch: the analysis's modules were not compiled (see above)" >&2; exit 1; }
	touch $(NATIVE)

demo: install
	$(VENV)/bin/msgwatch demo --output out/   # measurements and report in out/ (git-ignored)

lint: install-python
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache   # the layering: [tool.importlinter] in pyproject.toml

typecheck: install-python
	$(VENV)/bin/mypy

UNIT_FIRST := MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/pytest -q -n 4 --dist loadgroup -m "not lab" --durations=15
UNIT_LAB_PAIR := MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/pytest -q -n 2 --dist loadgroup -m lab_pair --durations=15
UNIT_LAB := MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/pytest -q -p no:xdist -m "lab and not lab_pair" --durations=25

unit: install
	# three phases (tests/conftest.py): everything but the lab on four workers, then the labs of
	# the shipped scenarios, the call matrix and circumvention two at a time, then the other lab
	# tests alone
	$(UNIT_FIRST)
	$(UNIT_LAB_PAIR)
	$(UNIT_LAB)   # the slowest phases: the suite must stay under 20 minutes

# The whole suite: lint, then the type check beside the first test phase (it needs no lab and
# the first phase's tests do not time the network), then the lab's tests (two phases, as in
# `unit`). Either failing fails the target; mypy's report is printed when it ends.
test: install lint
	@$(VENV)/bin/mypy > $(VENV)/mypy.log 2>&1 & mypy=$$!; \
	$(UNIT_FIRST); first=$$?; \
	wait $$mypy; typed=$$?; cat $(VENV)/mypy.log; \
	test $$first -eq 0 && test $$typed -eq 0
	$(UNIT_LAB_PAIR)
	$(UNIT_LAB)

bench: install
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/run_blocked_catalogue.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/lab_up_down.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/lab_scenarios.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/calls.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/collector_raw_writes.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/collector_load.py
	$(VENV)/bin/python benchmarks/cli_startup.py
	$(VENV)/bin/python benchmarks/analysis_throughput.py
	$(VENV)/bin/python benchmarks/event_detection.py
	$(VENV)/bin/python benchmarks/analysis_spark.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/analysis_latency.py
	$(VENV)/bin/python benchmarks/analysis_incremental.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/circumvention.py
	MSGWATCH_ALLOWED_NETWORKS=$(LAB_NETWORKS) $(VENV)/bin/python benchmarks/dashboard.py   # generates its synthetic observatory once (~5 min)

clean:
	rm -rf $(VENV) $(OONI_VENV) build *.egg-info src/*.egg-info
	find src/msgwatch -name '*.so' -delete   # the compiled analysis modules (setup.py)
	rm -f src/msgwatch/native.json
