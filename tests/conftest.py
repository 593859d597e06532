"""Make the project's plugins importable the way Ansible loads them."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "filter"))
sys.path.insert(0, str(ROOT / "plugins" / "modules"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))
# modules import their helpers as ansible.module_utils.<name>, as on a managed host
import ansible.module_utils  # noqa: E402

ansible.module_utils.__path__.append(str(ROOT / "plugins" / "module_utils"))
