#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nvidia_gpu_info
short_description: Discover NVIDIA GPUs, the loaded driver and what nvidia-smi reports
description:
  - Reads the PCI bus from C(/sys) (so GPUs are found before any driver is installed), the loaded
    kernel module from C(/proc/driver/nvidia/version), the EFI Secure Boot state, NVSwitches, and,
    when C(nvidia-smi) answers, every GPU's index, name, UUID, bus id, memory total and free,
    compute capability and persistence mode, the driver version and the CUDA version it supports.
  - Returns C(nvidia_gpu). Read-only, so it reports C(changed=false) and runs in check mode.
  - An C(_info) module, not a facts module, on purpose - its result is never written to the fact cache,
    so no decision is taken on GPU facts from an earlier run. The roles run it through the internal
    C(fleet_common) role's C(gpu_info) entry point, which keeps the result for the rest of the run in the
    host variable C(nvidia_gpu).
options: {}
author: vllm-fleet
"""

EXAMPLES = r"""
- name: Discover the GPUs
  nvidia_gpu_info:
  register: gpu

- name: Show them
  ansible.builtin.debug:
    msg: >-
      {{ gpu.nvidia_gpu.count }} GPUs, driver {{ gpu.nvidia_gpu.driver_version }},
      CUDA {{ gpu.nvidia_gpu.cuda_version }}
"""

RETURN = r"""
nvidia_gpu:
  description: >-
    pci_gpus, pci_gpu_count, nvswitches, nvswitch_count, kernel_module (loaded, version, flavor:
    open or proprietary), nouveau_loaded, secure_boot (true, false, or null without EFI), nvidia_smi
    (its path or null), smi_ok, smi_error, count, gpus (index, name, uuid, pci_bus_id,
    memory_total_mib, memory_free_mib, compute_capability, persistence_mode), driver_version,
    driver_branch, cuda_version, fabricmanager_installed, dev_char_missing.
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule

# Both forms, so the module runs from the checkout (ansible.cfg's module_utils path) and from the
# installed collection vllm_fleet.fleet. ansible-core packs whichever of them it finds: imports
# inside try/except are optional to its dependency finder. The checkout's comes first, so a run
# from the checkout never takes an older installed copy of the collection.
try:
    from ansible.module_utils.nvidia_gpu import gather
except ImportError:
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.nvidia_gpu import gather


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)

    def run(argv):
        return module.run_command(argv, environ_update={"LC_ALL": "C"})

    module.exit_json(changed=False, nvidia_gpu=gather(run))


if __name__ == "__main__":
    main()
