#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nvidia_gpu_facts
short_description: Discover NVIDIA GPUs, the loaded driver and what nvidia-smi reports
description:
  - Reads the PCI bus from C(/sys) (so GPUs are found before any driver is installed), the loaded
    kernel module from C(/proc/driver/nvidia/version), the EFI Secure Boot state, NVSwitches, and,
    when C(nvidia-smi) answers, every GPU's index, name, UUID, bus id, memory total and free,
    compute capability and persistence mode, the driver version and the CUDA version it supports.
  - Sets the fact C(nvidia_gpu). Read-only, so it reports C(changed=false) and runs in check mode.
options: {}
author: vllm-fleet
"""

EXAMPLES = r"""
- name: Discover the GPUs
  nvidia_gpu_facts:

- name: Show them
  ansible.builtin.debug:
    msg: "{{ nvidia_gpu.count }} GPUs, driver {{ nvidia_gpu.driver_version }}, CUDA {{ nvidia_gpu.cuda_version }}"
"""

RETURN = r"""
ansible_facts:
  description: C(nvidia_gpu), a dict.
  returned: always
  type: dict
  contains:
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
from ansible.module_utils.nvidia_gpu import gather


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)

    def run(argv):
        return module.run_command(argv, environ_update={"LC_ALL": "C"})

    module.exit_json(changed=False, ansible_facts={"nvidia_gpu": gather(run)})


if __name__ == "__main__":
    main()
