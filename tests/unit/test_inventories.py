"""The shipped inventories are valid inputs: every host passes the role's own checks."""

from __future__ import annotations

import pytest
import yaml
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import filter_loader, init_plugin_loader
from ansible.template import Templar
from ansible.vars.manager import VariableManager
from role_vars import ROOT, role_variables

init_plugin_loader()
filter_loader.add_directory(str(ROOT / "plugins" / "filter"))

import vllm_server as f  # noqa: E402


def hosts(inventory: str):
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / inventory)])
    vm = VariableManager(loader=loader, inventory=inv)
    for host in inv.get_hosts("vllm_servers"):
        yield host.name, loader, vm.get_vars(host=host)


def params(loader, host_vars) -> dict:
    variables = role_variables(**{**host_vars, "playbook_dir": str(ROOT / "playbooks")})
    return Templar(loader=loader, variables=variables).template(variables["__vllm_server_params"])


@pytest.mark.parametrize("inventory", ["example", "local"])
def test_every_host_passes_the_checks(inventory):
    seen = 0
    for name, loader, hv in hosts(inventory):
        # the files named on the controller (image archives, CA bundle) exist once `make` has built them
        assert f.value_errors(params(loader, hv)) == [], name
        seen += 1
    assert seen > 0


@pytest.mark.parametrize("role", ["nvidia_driver", "nvidia_container_toolkit"])
def test_the_example_fleets_gpu_settings_are_the_roles_own(role):
    options = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = options["argument_specs"]["main"]["options"]
    for name, _, hv in hosts("example"):
        for key, value in hv.items():
            if key.startswith(role + "_"):
                assert key in options, (name, key)
                assert value in options[key].get("choices", [value]), (name, key, value)
    legacy = dict(next(hv for n, _, hv in hosts("example") if n.startswith("gpu-v100")))
    assert legacy["nvidia_driver_kernel_modules"] == "proprietary"


def test_example_fleet_shapes():
    by_host = {name: params(loader, hv) for name, loader, hv in hosts("example")}
    assert by_host["gpu-a100-02.example.internal"]["gpus"] == [2, 3]
    assert f.tensor_parallel_size(by_host["gpu-h100-01.example.internal"]) == 4
    legacy = f.docker_run_args(by_host["gpu-v100-01.example.internal"])
    assert legacy[legacy.index("--quantization") + 1] == "awq"
