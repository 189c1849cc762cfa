"""Check the next rules of a flow's steps and that every step can be reached."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mentorflow.flows.document.checks import MISSING, _Checker, _join, _show, _Step
from mentorflow.flows.document.steps import (
    _RULE_FIELDS,
    CHOICE_TYPES,
    COMPARISON_OPERATORS,
    OPERATORS,
    is_number,
)


def _is_scalar_value(value: Any) -> bool:
    return (
        (isinstance(value, str) and "\x00" not in value)
        or isinstance(value, bool)
        or (is_number(value))
    )


class _RuleChecker(_Checker):
    """The checks of next rules and reachability, which need every step seen first."""

    def rules(self) -> None:
        answered_keys = {step.key: step for step in self.steps if step.key and step.answerable}
        for step in self.steps:
            raw = step.raw_next
            if raw is None:
                continue
            path = f"{step.path}.next"
            if not isinstance(raw, list):
                self.error(path, "must be a list of rules, each with when and goto")
                continue
            always_at: int | None = None
            for r, raw_rule in enumerate(raw):
                rule_path = f"{path}[{r}]"
                if always_at is not None:
                    self.error(
                        rule_path,
                        f"this rule is never used: next[{always_at}] has no 'when', "
                        "so it always applies",
                    )
                    continue
                rule = self.rule(raw_rule, rule_path, step, answered_keys)
                if rule is not None:
                    step.rules.append(rule)
                    if "when" not in rule:
                        always_at = r
            if step.rules:
                step.out["next"] = step.rules

    def rule(
        self, raw: Any, path: str, step: _Step, answered_keys: dict[str, _Step]
    ) -> dict | None:
        if not isinstance(raw, dict):
            self.error(path, "must be a mapping with when and goto")
            return None
        errors_before = len(self.errors)
        self.unknown_fields(raw, path, _RULE_FIELDS)
        out: dict[str, Any] = {}
        if "when" in raw:
            when = self.condition(raw["when"], f"{path}.when", step, answered_keys)
            if when is not MISSING:
                out["when"] = when
        goto = self.take(raw, path, "goto")
        if goto is not MISSING and self.string(goto, f"{path}.goto") is not MISSING:
            target = self.step_index.get(goto)
            if target is None:
                self.error(f"{path}.goto", f"unknown step '{goto}'")
            elif target <= step.index:
                # Every step falls through to the next one, so any backward jump loops.
                if target == step.index:
                    message = f"goto '{goto}' jumps back to this same step, which makes a cycle"
                else:
                    message = (
                        f"goto '{goto}' jumps back from step '{step.id}' to an earlier step, "
                        "which makes a cycle"
                    )
                self.error(f"{path}.goto", message)
                self.cycle_errors += 1
            out["goto"] = goto
        if len(self.errors) > errors_before:
            return None
        return out

    def condition(self, when: Any, path: str, step: _Step, answered_keys: dict[str, _Step]) -> Any:
        if not isinstance(when, dict):
            self.error(
                path,
                "must be a mapping with key and one operator "
                "(leave 'when' out for a rule that always applies)",
            )
            return MISSING
        errors_before = len(self.errors)
        operators = [name for name in when if name in OPERATORS]
        unknown = [name for name in when if name != "key" and name not in OPERATORS]
        for name in unknown:
            self.error(
                _join(path, str(name)),
                f"unknown operator '{name}'; expected one of: " + ", ".join(OPERATORS),
            )
        source: _Step | None = None
        key = self.take(when, path, "key")
        if key is not MISSING and self.string(key, f"{path}.key") is not MISSING:
            source = answered_keys.get(key)
            if source is None or source.index > step.index:
                self.error(f"{path}.key", f"key '{key}' is not answered before this step")
                source = None
        if not operators and not unknown:
            self.error(path, "needs one operator: " + ", ".join(OPERATORS))
        elif len(operators) > 1:
            self.error(
                path, f"has {len(operators)} operators ({', '.join(operators)}); use exactly one"
            )
        elif len(operators) == 1:
            operator = operators[0]
            self.operand(operator, when[operator], f"{path}.{operator}", source)
        if len(self.errors) > errors_before:
            return MISSING
        operator = operators[0]
        value = when[operator]
        return {"key": key, operator: list(value) if isinstance(value, list) else value}

    def operand(self, operator: str, value: Any, path: str, source: _Step | None) -> None:
        if operator == "answered":
            self.boolean(value, path)
            return
        if source is not None and source.type == "contact":
            message = f"only 'answered' applies to a contact step ('{source.id}')"
            self.error(path, message)
            return
        if operator in COMPARISON_OPERATORS:
            number = self.number(value, path)
            if number is not MISSING and source and source.type not in ("number", "scale"):
                self.error(
                    path,
                    f"'{operator}' only applies to number and scale steps; "
                    f"step '{source.id}' is a {source.type} step",
                )
            return
        if operator == "in":
            if not isinstance(value, list) or not value:
                self.error(path, "must be a non-empty list of values")
                return
            for i, item in enumerate(value):
                self.operand_value(item, f"{path}[{i}]", source)
            return
        self.operand_value(value, path, source)

    def operand_value(self, value: Any, path: str, source: _Step | None) -> None:
        if not _is_scalar_value(value):
            self.error(path, "must be a string, a number or true/false")
            return
        if source is None:
            return
        if source.type in CHOICE_TYPES:
            if source.options and (not isinstance(value, str) or value not in source.options):
                self.error(
                    path,
                    f"'{_show(value)}' is not an option of step '{source.id}'; expected one of: "
                    + ", ".join(source.options),
                )
        elif source.type == "boolean":
            if not isinstance(value, bool):
                self.error(path, f"must be true or false, because step '{source.id}' is boolean")
        elif source.type in ("number", "scale"):
            if not is_number(value):
                message = f"must be a number, because step '{source.id}' is a {source.type} step"
                self.error(path, message)
        elif not isinstance(value, str):
            message = f"must be a string, because step '{source.id}' is a {source.type} step"
            self.error(path, message)

    def graph(self) -> None:
        # Reachability is only meaningful once ids, rules and types are all sound.
        if len(self.errors) != self.cycle_errors or not self.steps:
            return
        count = len(self.steps)
        edges: list[set[int]] = []
        for step in self.steps:
            targets = {self.step_index[rule["goto"]] for rule in step.rules}
            targets = {target for target in targets if target > step.index}
            if step.index + 1 < count and not _always_jumps(step):
                targets.add(step.index + 1)
            edges.append(targets)
        reached = {0}
        pending = [0]
        while pending:
            for target in edges[pending.pop()]:
                if target not in reached:
                    reached.add(target)
                    pending.append(target)
        for step in self.steps:
            if step.index not in reached:
                self.error(step.path, f"step '{step.id}' is unreachable")


def _always_jumps(step: _Step) -> bool:
    """Tell whether some rule of the step always matches, so it never falls through."""
    domain: set[Any] | None = None
    if step.required and step.key:
        # A required answer is always present when the step is left, drawn from a known set.
        if step.type == "single_choice" and step.options:
            domain = set(step.options)
        elif step.type == "boolean":
            domain = {True, False}
    answered: dict[str, set[bool]] = defaultdict(set)
    covered: set[Any] = set()
    for rule in step.rules:
        when = rule.get("when")
        if when is None:
            return True
        key = when["key"]
        operator, value = next((name, v) for name, v in when.items() if name != "key")
        if operator == "answered":
            answered[key].add(value)
            if len(answered[key]) == 2:
                return True
        if domain is not None and key == step.key:
            covered |= _matching(operator, value, domain)
            if covered >= domain:
                return True
    return False


def _matching(operator: str, value: Any, domain: set[Any]) -> set[Any]:
    if operator == "equals":
        return {item for item in domain if _same(item, value)}
    if operator == "not_equals":
        return {item for item in domain if not _same(item, value)}
    if operator == "in":
        return {item for item in domain if any(_same(item, v) for v in value)}
    if operator == "answered":
        return set(domain) if value else set()
    return set()


def _same(left: Any, right: Any) -> bool:
    return isinstance(left, bool) == isinstance(right, bool) and left == right
