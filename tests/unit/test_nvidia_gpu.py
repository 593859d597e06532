"""GPU discovery (plugins/module_utils/nvidia_gpu.py) on outputs captured from a real H100.

The fixture tests/unit/fixtures/nvidia/h100-580.159.04 was captured on a lent H100 machine (its
README says how); the other inputs below are written out by hand and say so.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import nvidia_gpu_info as mod
import pytest
from ansible.module_utils import basic
from ansible.module_utils import nvidia_gpu as ng
from ansible.module_utils.common.text.converters import to_bytes

H100 = Path(__file__).parent / "fixtures" / "nvidia" / "h100-580.159.04"
FIELDS = [f for f, _ in ng.QUERY_FIELDS]


def fixture(name: str) -> str:
    return (H100 / name).read_text()


def sysfs_from_capture(root: Path) -> None:
    """Rebuild /sys/bus/pci/devices from the captured listing (path vendor device class driver)."""
    for line in fixture("pci.txt").splitlines():
        path, vendor, device, cls, *driver = line.split()
        dev = root / path.lstrip("/")
        dev.mkdir(parents=True)
        (dev / "vendor").write_text(vendor + "\n")
        (dev / "device").write_text(device + "\n")
        (dev / "class").write_text(cls + "\n")
        if driver:
            target = root / "sys/bus/pci/drivers" / Path(driver[0]).name
            target.mkdir(parents=True, exist_ok=True)
            (dev / "driver").symlink_to(target)


def h100_host(root: Path) -> None:
    sysfs_from_capture(root)
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(fixture("proc-version.txt"))
    (root / "sys/module/nvidia").mkdir(parents=True)
    smi = root / "usr/bin/nvidia-smi"
    smi.parent.mkdir(parents=True)
    smi.write_text("")
    smi.chmod(0o755)


def h100_run(argv):
    """nvidia-smi as the H100 answered it."""
    if any(a.startswith("--query-gpu=") for a in argv):
        assert argv[1] == "--query-gpu=" + ",".join(FIELDS)
        return 0, fixture("query.txt"), ""
    return 0, fixture("smi.txt"), ""


def test_the_h100_query_parses_into_typed_facts():
    (gpu,) = ng.parse_query(fixture("query.txt"), FIELDS)
    assert gpu == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-17cd1b78-0bf1-21d8-3b46-f3528921b171",
        "pci_bus_id": "00000000:00:06.0",
        "memory_total_mib": 81559,
        "memory_free_mib": 81079,
        "compute_capability": "9.0",
        "driver_version": "580.159.04",
        "persistence_mode": True,
    }


def test_the_h100_header_gives_driver_and_cuda():
    assert ng.parse_smi_header(fixture("smi.txt")) == ("580.159.04", "13.0")
    assert ng.parse_smi_header("") == (None, None)


def test_proc_version_tells_open_from_proprietary():
    assert ng.parse_proc_version(fixture("proc-version.txt")) == ("580.159.04", "open")
    # written out by hand in the proprietary module's format
    text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.161.07  Sat Feb 17 22:55:48 UTC 2024\n"
    assert ng.parse_proc_version(text) == ("535.161.07", "proprietary")
    assert ng.parse_proc_version(None) == (None, None)


def test_a_row_of_the_wrong_width_is_an_error_not_a_guess():
    with pytest.raises(ng.DiscoveryError, match="12 fields where 9"):
        ng.parse_query(fixture("query-wide.txt"), FIELDS)


def test_the_h100_pci_bus_has_one_gpu_and_no_nvswitch(tmp_path):
    sysfs_from_capture(tmp_path)
    gpus, switches = ng.scan_pci(str(tmp_path))
    assert gpus == [{"address": "0000:00:06.0", "device_id": "0x2330", "driver": "nvidia"}]
    assert switches == []


def test_nvswitches_are_found_by_their_pci_class(tmp_path):
    # an HGX board's NVSwitch as sysfs shows one (class 0x068000, NVIDIA's vendor id); written by hand
    dev = tmp_path / "sys/bus/pci/devices/0000:05:00.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n")
    (dev / "device").write_text("0x22a3\n")
    (dev / "class").write_text("0x068000\n")
    gpus, switches = ng.scan_pci(str(tmp_path))
    assert gpus == [] and [s["address"] for s in switches] == ["0000:05:00.0"]
    assert switches[0]["driver"] is None


@pytest.mark.parametrize(("data", "expected"), [(b"\x06\x00\x00\x00\x01", True), (b"\x06\x00\x00\x00\x00", False)])
def test_secure_boot_is_read_from_the_efi_variable(tmp_path, data, expected):
    var = tmp_path / ng.EFI_SECURE_BOOT_VAR
    var.parent.mkdir(parents=True)
    var.write_bytes(data)
    assert ng.secure_boot(str(tmp_path)) is expected


def test_secure_boot_is_unknown_without_efi(tmp_path):
    assert ng.secure_boot(str(tmp_path)) is None


def test_missing_dev_char_links_are_listed(tmp_path, monkeypatch):
    dev = tmp_path / "dev"
    (dev / "char").mkdir(parents=True)
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (dev / name).write_text("")
    (dev / "char" / "195:255").symlink_to("../nvidiactl")
    numbers = {"nvidia0": (195, 0), "nvidiactl": (195, 255), "nvidia-uvm": (238, 0)}
    real_stat = os.stat

    def fake_stat(path, *a, **kw):  # the H100's majors and minors (fixture's ls -l /dev), as char devices
        name = os.path.basename(path)
        if name in numbers:
            return SimpleNamespace(st_mode=stat.S_IFCHR | 0o666, st_rdev=os.makedev(*numbers[name]))
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(ng.os, "stat", fake_stat)
    assert ng.dev_char_missing(str(tmp_path)) == ["/dev/nvidia-uvm", "/dev/nvidia0"]


def test_gather_on_the_h100(tmp_path):
    h100_host(tmp_path)
    facts = ng.gather(h100_run, root=str(tmp_path), smi_paths=("/usr/bin/nvidia-smi",))
    assert facts["smi_ok"] and facts["smi_error"] is None
    assert facts["count"] == 1 and facts["pci_gpu_count"] == 1 and facts["nvswitch_count"] == 0
    assert facts["driver_version"] == "580.159.04" and facts["driver_branch"] == 580
    assert facts["cuda_version"] == "13.0"
    assert facts["kernel_module"] == {"loaded": True, "version": "580.159.04", "flavor": "open"}
    assert facts["nouveau_loaded"] is False and facts["secure_boot"] is None
    assert facts["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert "driver_version" not in facts["gpus"][0]
    json.dumps(facts)  # facts must serialise


def test_gather_retries_without_compute_cap_for_old_drivers(tmp_path):
    h100_host(tmp_path)
    calls = []

    def old_driver(argv):  # a pre-510 driver refuses compute_cap with the words nvidia-smi uses
        calls.append(argv)
        if any(a.startswith("--query-gpu=") for a in argv):
            if "compute_cap" in argv[1]:
                return 2, 'Field "compute_cap" is not a valid field to query.\n\n', ""
            return 0, "0, Tesla V100-SXM2-32GB, GPU-1, 00000000:3B:00.0, 32510, 32000, 470.239.06, Disabled\n", ""
        return 0, "| NVIDIA-SMI 470.239.06   Driver Version: 470.239.06   CUDA Version: 11.4     |", ""

    facts = ng.gather(old_driver, root=str(tmp_path), smi_paths=("/usr/bin/nvidia-smi",))
    assert len([c for c in calls if len(c) > 1 and "--query-gpu" in c[1]]) == 2
    assert facts["gpus"][0]["compute_capability"] is None
    assert facts["gpus"][0]["persistence_mode"] is False
    assert (facts["driver_version"], facts["cuda_version"]) == ("470.239.06", "11.4")


def test_gather_reports_a_driver_that_does_not_answer(tmp_path):
    h100_host(tmp_path)
    msg = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
           "Make sure that the latest NVIDIA driver is installed and running.")
    facts = ng.gather(lambda argv: (9, msg + "\n", ""), root=str(tmp_path), smi_paths=("/usr/bin/nvidia-smi",))
    assert not facts["smi_ok"] and msg in facts["smi_error"] and "rc=9" in facts["smi_error"]
    assert facts["count"] == 0 and facts["pci_gpu_count"] == 1


def test_gather_without_nvidia_smi_or_gpus(tmp_path):
    facts = ng.gather(lambda argv: pytest.fail("nothing to run"), root=str(tmp_path))
    assert facts["smi_error"] == "nvidia-smi is not installed"
    assert facts["pci_gpu_count"] == 0 and facts["kernel_module"]["loaded"] is False


def test_the_module_sets_the_fact_and_changes_nothing(monkeypatch):
    class Exit(Exception):
        pass

    def exit_json(self, **kw):
        raise Exit(kw)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    args = {"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": True}}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps(args)))
    monkeypatch.setattr(mod, "gather", lambda run: {"count": 0})
    with pytest.raises(Exit) as e:
        mod.main()
    assert e.value.args[0] == {"changed": False, "nvidia_gpu": {"count": 0}}


def test_several_gpus_parse_in_order():
    # the H100's row repeated for an 8-GPU board, indices and bus ids changed by hand
    row = fixture("query.txt").strip()
    text = "\n".join(row.replace("0, ", f"{i}, ", 1).replace("00:06.0", f"{i:02x}:00.0") for i in range(8)) + "\n"
    gpus = ng.parse_query(text, FIELDS)
    assert [g["index"] for g in gpus] == list(range(8))
    assert gpus[7]["pci_bus_id"] == "00000000:07:00.0" and {g["memory_total_mib"] for g in gpus} == {81559}


def test_the_two_h100_machine_parses():
    two = Path(__file__).parent / "fixtures" / "nvidia" / "2xh100-580.159.04"
    gpus = ng.parse_query((two / "query.txt").read_text(), FIELDS)
    assert [(g["index"], g["pci_bus_id"]) for g in gpus] == [(0, "00000000:00:06.0"), (1, "00000000:00:07.0")]
    assert len({g["uuid"] for g in gpus}) == 2
    assert ng.parse_smi_header((two / "smi.txt").read_text()) == ("580.159.04", "13.0")
