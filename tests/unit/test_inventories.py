"""The shipped inventories are valid inputs: every host passes the role's own checks."""

from __future__ import annotations

import pytest
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
        assert f.param_errors(params(loader, hv)) == [], name
        seen += 1
    assert seen > 0


def test_example_fleet_shapes():
    by_host = {name: params(loader, hv) for name, loader, hv in hosts("example")}
    assert by_host["gpu-a100-02.example.internal"]["gpus"] == [2, 3]
    assert f.tensor_parallel_size(by_host["gpu-h100-01.example.internal"]) == 4
    legacy = f.docker_run_args(by_host["gpu-v100-01.example.internal"])
    assert legacy[legacy.index("--quantization") + 1] == "awq"
