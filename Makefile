# The README's commands. Each target installs what it needs first.
#   make demo        a local container host, provisioned by the real playbooks, serving a tiny model on :9999
#   make demo-clean  removes it
#   make test        lint, unit tests, molecule (everything CI runs)
#   make lint | unit | molecule   one tier (molecule-default, molecule-gpu-prep: one scenario);  make quick   lint + unit (seconds)
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
# find-links), the build takes it from a wheelhouse and does without that index.
FIND_LINKS := $(or $(PIP_FIND_LINKS),$(shell pip config get global.find-links 2>/dev/null))
TORCH_CPU_WHEEL := $(firstword $(wildcard $(addsuffix /torch-2.13.0+cpu-cp311-*.whl,$(FIND_LINKS))))
ifneq ($(TORCH_CPU_WHEEL),)
export VLLM_BUILD_WHEELHOUSE := $(CACHE)/wheelhouse
export VLLM_BUILD_PIP_EXTRA_INDEX_URL := none
endif
PLAYBOOK := ansible-playbook -i inventories/local
# other test-host distributions for molecule (need registry access): molecule/default/distros/*.env
MOLECULE_DISTRO ?=
MOLECULE_ENV := $(if $(MOLECULE_DISTRO),set -a && . molecule/default/distros/$(MOLECULE_DISTRO).env && set +a &&)

.PHONY: demo demo-clean test quick lint unit molecule molecule-default molecule-gpu-prep venv engine images demo-images model wheelhouse clean

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
	$(if $(TORCH_CPU_WHEEL),cp -u $(TORCH_CPU_WHEEL) $(CACHE)/wheelhouse/)

demo: venv demo-images model wheelhouse
	$(PLAYBOOK) demo/host.yml
	$(PLAYBOOK) playbooks/site.yml
	@echo
	@echo "vLLM answers on http://127.0.0.1:9999 (model: tiny-chat). Try the seed's request:"
	@echo "  curl http://0.0.0.0:9999/v1/chat/completions -H \"Content-Type: application/json\" -d '{\"model\": \"tiny-chat\",\"temperature\": 0.2,\"stream\": false, \"messages\": [{\"role\": \"user\", \"content\":\"Which company developed you as an AI agent?\"}]}'"
	@echo "Remove it with: make demo-clean"

demo-clean: venv
	$(PLAYBOOK) demo/host.yml -e demo_state=absent

lint: venv
	yamllint --strict .
	ansible-lint
	ruff check plugins tests scripts molecule

unit: venv
	pytest -q tests/unit

quick: lint unit

# the test hosts' inner Docker storage lives in named volumes: removed before and after, so every
# run builds the image from nothing, as CI does
MOLECULE_VOLUMES = $(MOLECULE_ENV) docker volume rm -f $${MOLECULE_HOST1_NAME:-vllm-debian12}-docker $${MOLECULE_HOST2_NAME:-vllm-debian11}-docker >/dev/null

# GPU host preparation without a GPU: Debian's driver user space, nouveau, the toolkit from a local
# test-double repository, the no-GPU path (molecule/gpu-prep)
GPUPREP_VOLUMES = docker volume rm -f gpuprep-forced-docker >/dev/null
molecule-gpu-prep: venv images
	$(GPUPREP_VOLUMES) || true
	rc=0; molecule test -s gpu-prep || rc=$$?; $(GPUPREP_VOLUMES) || true; exit $$rc

molecule-default: venv images model wheelhouse
	$(MOLECULE_VOLUMES) || true
	rc=0; $(MOLECULE_ENV) molecule test -s default || rc=$$?; $(MOLECULE_VOLUMES) || true; exit $$rc

molecule: molecule-gpu-prep molecule-default

test: lint unit molecule

clean: demo-clean
	rm -rf $(CACHE)
