# Copyright: the vllm-fleet authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's variables as the types its argument spec declares, for the role's own use.

Ansible checks a role's variables against ``meta/argument_specs.yml`` when the role starts, and
converts them to check them, but the role then reads the variables as they came: ``-e
vllm_server_trust_remote_code=false`` is the string ``"false"``, which is true. Nothing can
overwrite an extra variable, so each role reads its variables from the fact this action sets
instead: ``__<role>`` (``__vllm_server.port``), a mapping of every option of every entry point
of the role, without the role's prefix, converted by Ansible's own ``ArgumentSpecValidator``
(the converter the argument spec check uses). tests/unit/test_role_arguments.py checks that no
task, template or vars file of a role reads one of its public variables directly.

Options the spec marks ``no_log`` (the API key, the secret environment) are left out of the fact:
facts go to the fact cache (ansible.cfg's jsonfile cache, a world-readable file on the controller).
They come back in the task's result instead, under ``secrets``, which the role registers (a
registered variable lives in memory for the run only) and the task hides (no_log).
"""

from __future__ import annotations

import json
import os
import re

import yaml
from ansible.errors import AnsibleActionFail, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

# option keys that only document (Ansible's role spec format) or that must not act here: the values
# come from the task's variables, which hold the role's defaults, so the spec's copies of them are
# not applied, and required-ness is Ansible's own check at the start of the role.
_DROP = {"default", "required", "description", "short_description", "version_added", "notes"}


def strip_spec(spec: dict) -> dict:
    """An argument spec without defaults and required flags, sub-options included."""
    out = {}
    for name, opt in spec.items():
        opt = {k: v for k, v in (opt or {}).items() if k not in _DROP}
        if isinstance(opt.get("options"), dict):
            opt["options"] = strip_spec(opt["options"])
        out[name] = opt
    return out


def role_options(role_dir: str) -> dict:
    """Every option of every entry point of the role at role_dir (they agree where they repeat)."""
    path = os.path.join(role_dir, "meta", "argument_specs.yml")
    with open(path, encoding="utf-8") as f:
        specs = (yaml.safe_load(f) or {}).get("argument_specs") or {}
    options: dict = {}
    for entry in specs.values():
        options.update((entry or {}).get("options") or {})
    return strip_spec(options)


def json_lists(options: dict, values: dict) -> dict:
    """A list given as a JSON string (`-e 'name=["a", "b"]'`) as that list: Ansible's converter
    splits strings on commas only (it reads JSON for dictionaries itself)."""
    out = dict(values)
    for name, value in values.items():
        is_list = (options.get(name) or {}).get("type") == "list"
        if is_list and isinstance(value, str) and value.lstrip().startswith("["):
            try:
                out[name] = json.loads(value)
            except ValueError:
                pass  # left to the converter, which refuses it by name
    return out


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def control_errors(values: dict, text_options: set[str] = frozenset()) -> list[str]:
    """Control characters in any string of any option but free text ones (systemd ends a unit line
    at \\r as well as \\n; a newline adds a line to an env file, a repository file, a drop-in).
    The message says where, never what the value is (it may be a secret)."""
    errors: list[str] = []

    def walk(name: str, where: str, value) -> None:
        if isinstance(value, str):
            m = CONTROL.search(value)
            if m:
                errors.append(f"{name}: {where}holds a control character ({m.group()!r} at position {m.start()}); "
                              "expected printable text")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(name, "a key ", str(k))
                walk(name, f"the value of {str(k)!r} " if not CONTROL.search(str(k)) else "a value ", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(name, f"item {i} ", v)

    for name, value in values.items():
        if name not in text_options:
            walk(name, "", value)
    return errors


def convert(options: dict, values: dict) -> tuple[dict, list[str]]:
    """The values converted to their options' types, and the errors (which name options, not values)."""
    validator = ArgumentSpecValidator(options)
    result = validator.validate(json_lists(options, values), validate_role_argument_spec=True)
    return result.validated_parameters, list(result.error_messages)


def split(options: dict, prefix: str, converted: dict) -> tuple[dict, dict]:
    """The converted variables without the role's prefix: (the fact, the no_log ones)."""
    public, secrets = {}, {}
    for name, value in converted.items():
        if name in options:
            short = name[len(prefix):] if name.startswith(prefix) else name
            (secrets if options[name].get("no_log") else public)[short] = value
    return public, secrets


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        own = self._task._role.get_name(include_role_fqcn=False) if self._task._role else None
        role = self._task.args.get("role") or own
        if not role:
            raise AnsibleActionFail("role_arguments: not called from a role; give role=<name>")
        role_dir = self._role_dir(role, task_vars)
        options = role_options(role_dir)
        prefix = role + "_"
        values = {}
        for name in options:
            if name in task_vars:
                try:
                    values[name] = self._templar.template(task_vars[name])
                except AnsibleUndefinedVariable:
                    # early checks (site.yml's first play, before facts) skip what needs facts
                    if not self._task.args.get("skip_undefined"):
                        raise
        converted, errors = convert(options, values)
        text = {prefix + name for name in self._task.args.get("text_options") or []}
        errors += control_errors(converted if not errors else values, text)
        if errors:
            result.update(failed=True, msg=f"{role}: variables of the wrong type or with control characters:\n"
                          + "\n".join(errors))
            return result
        public, secrets = split(options, prefix, converted)
        facts = {} if self._task.args.get("skip_undefined") else {"__" + role: public}
        result.update(changed=False, ansible_facts=facts, secrets=secrets, _ansible_no_log=True)
        return result

    def _role_dir(self, role: str, task_vars: dict) -> str:
        if self._task._role and self._task._role.get_name(include_role_fqcn=False) == role:
            return self._task._role._role_path
        # a sibling role of the calling one, or a role of this collection (plugins/action/../../roles)
        here = task_vars.get("role_path") or ""
        for candidate in (os.path.join(os.path.dirname(here), role) if here else "",
                          os.path.join(os.path.dirname(__file__), "..", "..", "roles", role)):
            if candidate and os.path.isfile(os.path.join(candidate, "meta", "argument_specs.yml")):
                return os.path.normpath(candidate)
        raise AnsibleActionFail(f"role_arguments: cannot find the role {role}")
