# Tenantry: every target installs what it needs, on a bare machine, and can
# run twice in a row without harm. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .tenantry
KUBECONFIG_PATH := $(STATE)/kubeconfig
# The editable install is a link tree (mypy can read it): refresh it whenever
# the set of source files or the project metadata changes.
SOURCES_HASH := $(shell { cat pyproject.toml; find license core db operator api cli \( -name '*.py' -o -name py.typed -o -name '*.sql' \) 2>/dev/null | sort; } | sha1sum | cut -c1-12)
INSTALLED := $(VENV)/.installed-$(SOURCES_HASH)

.PHONY: help deps venv tools crds lint test test-unit cluster-up cluster-down dev e2e-kind bench clean

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## Debian packages the test bed needs (PostgreSQL, Redis), when missing and root.
	@bash hack/install-deps.sh

$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=strict >$(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(INSTALLED) ## The Python virtualenv with Tenantry and its dev tools.

tools: ## Build etcd, kube-apiserver, kube-controller-manager, helm, stripe-mock (cached).
	@bash hack/install-tools.sh all

crds: venv ## Render crds/*.yaml from core/resources.py.
	@$(VENV)/bin/tenantry crds --output crds

lint: venv tools ## ruff, import layers, mypy, CRDs up to date, helm lint.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd $(VENV) && bin/lint-imports --config ../pyproject.toml
	cd $(VENV) && bin/mypy --config-file ../pyproject.toml -p tenantry.license -p tenantry.core -p tenantry.db -p tenantry.operator -p tenantry.api -p tenantry.cli
	$(VENV)/bin/tenantry crds --check --output crds
	$$(bash hack/install-tools.sh paths | sed -n 's/^helm=//p') lint --strict charts/customer-instance

test: deps venv tools ## The whole suite, against a real control plane, PostgreSQL, Redis.
	$(VENV)/bin/pytest

test-unit: venv ## Only the tests that need no server.
	$(VENV)/bin/pytest -m "not cluster"

cluster-up: venv tools ## Start the local control plane in the background ($(KUBECONFIG_PATH)).
	@$(PY) hack/testbed.py up --state $(STATE)/cluster

cluster-down: ## Stop it.
	@$(PY) hack/testbed.py down --state $(STATE)/cluster

dev: deps venv tools ## Control plane, PostgreSQL, Redis, CRDs, operator, API, samples; Ctrl-C stops all.
	@$(PY) hack/dev.py

e2e-kind: venv tools ## The suite against a kind cluster (needs Docker and kind).
	kind create cluster --name tenantry-e2e --kubeconfig $(STATE)/kind-kubeconfig
	TENANTRY_TEST_KUBECONFIG=$(STATE)/kind-kubeconfig $(VENV)/bin/pytest -m cluster; \
	  status=$$?; kind delete cluster --name tenantry-e2e; exit $$status

bench: deps venv tools ## Run the benchmarks under bench/.
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean: cluster-down ## Remove the venv and local state (the tool cache stays).
	rm -rf $(VENV) $(STATE) build *.egg-info
