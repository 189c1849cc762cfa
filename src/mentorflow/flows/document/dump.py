"""Write a definition back out: readable YAML for people, a checksum for storage."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from mentorflow.flows.document.steps import (
    _OPTION_FIELDS,
    _PHASE_FIELDS,
    _ROOT_FIELDS,
    _RULE_FIELDS,
    _STEP_FIELD_ORDER,
    OPERATORS,
    _ordered,
)


def dump_document(definition: dict) -> str:
    """Render a definition as YAML, fields in reading order."""
    return yaml.dump(
        _readable(definition),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def checksum(definition: dict) -> str:
    """Return the sha256 hex digest of the definition's canonical JSON."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _FlowMapping(dict):
    pass


class _FlowList(list):
    pass


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        # load_document rejects aliases, so shared objects must be written out in full.
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as people write them by hand.
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_flow_mapping(dumper: yaml.SafeDumper, value: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=True)


def _represent_flow_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_FlowMapping, _represent_flow_mapping)
_Dumper.add_representer(_FlowList, _represent_flow_list)


def _readable(definition: dict) -> dict:
    root = _ordered(definition, _ROOT_FIELDS)
    if isinstance(root.get("phases"), list):
        root["phases"] = [_readable_phase(phase) for phase in root["phases"]]
    return root


def _readable_phase(phase: Any) -> Any:
    if not isinstance(phase, dict):
        return phase
    phase = _ordered(phase, _PHASE_FIELDS)
    if isinstance(phase.get("steps"), list):
        phase["steps"] = [_readable_step(step) for step in phase["steps"]]
    return phase


def _readable_step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    step = _ordered(step, _STEP_FIELD_ORDER)
    if isinstance(step.get("options"), list):
        step["options"] = [
            _FlowMapping(_ordered(option, _OPTION_FIELDS)) if isinstance(option, dict) else option
            for option in step["options"]
        ]
    if isinstance(step.get("fields"), list):
        step["fields"] = _FlowList(step["fields"])
    if isinstance(step.get("next"), list):
        step["next"] = [_readable_rule(rule) for rule in step["next"]]
    return step


def _readable_rule(rule: Any) -> Any:
    if not isinstance(rule, dict):
        return rule
    rule = _ordered(rule, _RULE_FIELDS)
    if isinstance(rule.get("when"), dict):
        rule["when"] = _FlowMapping(_ordered(rule["when"], ("key", *OPERATORS)))
    return rule
