# -*- coding: utf-8 -*-
"""Discover NVIDIA GPUs on a host: PCI devices, the loaded kernel module, nvidia-smi's view.

Runs on managed hosts, so it keeps to the standard library and to syntax Python 2.7 and 3.6
accept (CentOS 7.9). Everything that touches the host goes through two seams that tests
replace: ``run`` (a command runner returning ``(rc, stdout, stderr)``) and ``root`` (the
directory the host's ``/sys``, ``/proc`` and ``/dev`` are read under).
"""

import csv
import os
import re
import stat

NVIDIA_PCI_VENDOR = "0x10de"
# PCI class codes (class, subclass): 0x0300 VGA, 0x0302 3D controller (data-centre GPUs);
# NVSwitches show up as 0x0680 "other bridge" devices of NVIDIA's vendor id.
GPU_PCI_CLASSES = ("0x0300", "0x0302")
NVSWITCH_PCI_CLASS = "0x0680"

# What is asked of nvidia-smi --query-gpu, and the name each field gets in the facts.
QUERY_FIELDS = (
    ("index", "index"),
    ("name", "name"),
    ("uuid", "uuid"),
    ("pci.bus_id", "pci_bus_id"),
    ("memory.total", "memory_total_mib"),
    ("memory.free", "memory_free_mib"),
    ("compute_cap", "compute_capability"),
    ("driver_version", "driver_version"),
    ("persistence_mode", "persistence_mode"),
)
# compute_cap exists from driver 510 on; older drivers (the last ones for CentOS 7, say) refuse
# the whole query when it is named, so the query is retried without it.
OPTIONAL_FIELDS = ("compute_cap",)

EFI_SECURE_BOOT_VAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


class DiscoveryError(Exception):
    """nvidia-smi is there but did not answer: the message says why."""


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _na(value):
    value = (value or "").strip()
    return None if value in ("", "N/A", "[N/A]", "[Not Supported]", "Not Supported") else value


def parse_query(text, fields):
    """Rows of ``--query-gpu=... --format=csv,noheader,nounits`` as dicts keyed by fact names."""
    names = dict(QUERY_FIELDS)
    gpus = []
    for row in csv.reader([line for line in text.splitlines() if line.strip()], skipinitialspace=True):
        if len(row) != len(fields):
            raise DiscoveryError("nvidia-smi printed %d fields where %d were asked for: %r"
                                 % (len(row), len(fields), ",".join(row)))
        gpu = dict((names[f], _na(v)) for f, v in zip(fields, row))
        gpu["index"] = _int(gpu["index"])
        gpu["memory_total_mib"] = _int(gpu.get("memory_total_mib"))
        gpu["memory_free_mib"] = _int(gpu.get("memory_free_mib"))
        gpu.setdefault("compute_capability", None)
        mode = gpu.get("persistence_mode")
        gpu["persistence_mode"] = None if mode is None else mode.lower() == "enabled"
        gpus.append(gpu)
    return gpus


_HEADER_RE = re.compile(r"Driver Version:\s*([0-9.]+).*?CUDA Version:\s*([0-9.]+)", re.S)


def parse_smi_header(text):
    """Driver version and the CUDA version that driver supports, from plain ``nvidia-smi``."""
    m = _HEADER_RE.search(text or "")
    return (m.group(1), m.group(2)) if m else (None, None)


def parse_proc_version(text):
    """The loaded kernel module's version and flavour from ``/proc/driver/nvidia/version``."""
    if not text:
        return None, None
    m = re.search(r"Kernel Module(?: for \S+)?\s+([0-9][0-9.]+)", text)
    version = m.group(1) if m else None
    flavor = "open" if "Open Kernel Module" in text else "proprietary"
    return version, flavor


def driver_branch(version):
    """580 for 580.159.04."""
    return _int((version or "").split(".")[0]) if version else None


def scan_pci(root="/"):
    """NVIDIA GPUs and NVSwitches on the PCI bus, readable with no driver installed."""
    base = os.path.join(root, "sys/bus/pci/devices")
    gpus, switches = [], []
    try:
        addresses = sorted(os.listdir(base))
    except OSError:
        return gpus, switches
    for address in addresses:
        dev = os.path.join(base, address)
        if _read(os.path.join(dev, "vendor")) != NVIDIA_PCI_VENDOR:
            continue
        cls = (_read(os.path.join(dev, "class")) or "")[:6]
        driver = os.path.realpath(os.path.join(dev, "driver"))
        entry = {
            "address": address,
            "device_id": _read(os.path.join(dev, "device")),
            "driver": os.path.basename(driver) if os.path.exists(os.path.join(dev, "driver")) else None,
        }
        if cls in GPU_PCI_CLASSES:
            gpus.append(entry)
        elif cls == NVSWITCH_PCI_CLASS:
            switches.append(entry)
    return gpus, switches


def secure_boot(root="/"):
    """True or False on an EFI host; None where the host did not boot through EFI."""
    if not os.path.isdir(os.path.join(root, "sys/firmware/efi")):
        return None
    try:
        with open(os.path.join(root, EFI_SECURE_BOOT_VAR), "rb") as f:
            data = bytearray(f.read())
    except (IOError, OSError):
        return False
    # four bytes of attributes, then the value
    return len(data) >= 5 and data[4] == 1


def dev_char_missing(root="/"):
    """NVIDIA device nodes with no ``/dev/char/MAJOR:MINOR`` link.

    runc resolves device nodes through ``/dev/char``; with the systemd cgroup driver a
    ``systemctl daemon-reload`` re-applies device rules from it, and containers lose their
    GPUs ("Failed to initialize NVML") when the links are missing.
    """
    dev = os.path.join(root, "dev")
    nodes = []
    try:
        names = sorted(os.listdir(dev))
    except OSError:
        return nodes
    paths = [os.path.join(dev, n) for n in names if n.startswith("nvidia")]
    caps = os.path.join(dev, "nvidia-caps")
    if os.path.isdir(caps):
        paths += [os.path.join(caps, n) for n in sorted(os.listdir(caps))]
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISCHR(st.st_mode):
            continue
        link = os.path.join(dev, "char", "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        if not os.path.lexists(link):
            nodes.append("/" + os.path.relpath(path, root))
    return nodes


def query_gpus(run, smi):
    """nvidia-smi's list of GPUs; raises DiscoveryError with nvidia-smi's own words."""
    fields = [f for f, _ in QUERY_FIELDS]
    for attempt in (fields, [f for f in fields if f not in OPTIONAL_FIELDS]):
        rc, out, err = run([smi, "--query-gpu=" + ",".join(attempt), "--format=csv,noheader,nounits"])
        if rc == 0:
            return parse_query(out, attempt)
        message = (out + err).strip()
        if "is not a valid field" not in message:
            break
    raise DiscoveryError("%s failed (rc=%s): %s" % (smi, rc, message or "no output"))


def gather(run, root="/", smi_paths=("/usr/bin/nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi"),
           fabricmanager_paths=("/usr/bin/nv-fabricmanager",)):
    """All GPU facts of the host; never raises (a failed nvidia-smi is reported in ``smi_error``)."""
    pci_gpus, switches = scan_pci(root)
    module_version, flavor = parse_proc_version(_read(os.path.join(root, "proc/driver/nvidia/version")))
    smi = next((p for p in smi_paths if os.access(os.path.join(root, p.lstrip("/")), os.X_OK)), None)
    facts = {
        "pci_gpus": pci_gpus,
        "pci_gpu_count": len(pci_gpus),
        "nvswitches": switches,
        "nvswitch_count": len(switches),
        "kernel_module": {
            "loaded": os.path.isdir(os.path.join(root, "sys/module/nvidia")),
            "version": module_version or _read(os.path.join(root, "sys/module/nvidia/version")),
            "flavor": flavor,
        },
        "nouveau_loaded": os.path.isdir(os.path.join(root, "sys/module/nouveau")),
        "secure_boot": secure_boot(root),
        "nvidia_smi": smi,
        "smi_ok": False,
        "smi_error": None,
        "count": 0,
        "gpus": [],
        "driver_version": None,
        "driver_branch": None,
        "cuda_version": None,
        "fabricmanager_installed": any(os.path.exists(os.path.join(root, p.lstrip("/")))
                                       for p in fabricmanager_paths),
        "dev_char_missing": dev_char_missing(root),
    }
    if smi is None:
        facts["smi_error"] = "nvidia-smi is not installed"
        return facts
    try:
        gpus = query_gpus(run, smi)
    except DiscoveryError as e:
        facts["smi_error"] = str(e)
        return facts
    rc, out, _ = run([smi])
    driver, cuda = parse_smi_header(out if rc == 0 else "")
    driver = driver or next((g["driver_version"] for g in gpus if g.get("driver_version")), None)
    for gpu in gpus:
        gpu.pop("driver_version", None)
    facts.update(smi_ok=True, gpus=gpus, count=len(gpus), driver_version=driver,
                 driver_branch=driver_branch(driver), cuda_version=cuda)
    return facts
