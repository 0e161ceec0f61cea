"""The runbook JSON Schema, with each step type's ``with`` model tied to its ``type``."""

from __future__ import annotations

from typing import Any

from drctl.runbook.model import Runbook
from drctl.runbook.targets import TARGET_TYPES
from drctl.steps.registry import get_step_type, step_type_names


def runbook_schema() -> dict[str, Any]:
    schema = Runbook.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://drctl.dev/schema/runbook-v1.json"
    defs = schema.setdefault("$defs", {})
    defs["template"] = {
        "type": "string",
        "pattern": "\\{\\{|\\{%",
        "description": "A Jinja template, rendered before the value is validated.",
    }
    rules = []
    for name in step_type_names():
        inputs = get_step_type(name).Inputs
        sub = inputs.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        key = f"with:{name}"
        # Any input may be a template, rendered before validation at compile or run time.
        for prop, spec in list(sub.get("properties", {}).items()):
            sub["properties"][prop] = {"anyOf": [spec, {"$ref": "#/$defs/template"}]}
        defs[key] = sub
        rules.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {"with": {"$ref": f"#/$defs/{key}"}}},
            }
        )
    step = defs["StepSpec"]
    step["allOf"] = rules
    step["properties"]["type"]["enum"] = step_type_names()
    target_rules = []
    for kind, model in sorted(TARGET_TYPES.items()):
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        sub["properties"]["type"] = {"const": kind}
        defs[f"target:{kind}"] = sub
        target_rules.append({"$ref": f"#/$defs/target:{kind}"})
    schema["properties"]["targets"]["additionalProperties"] = {"oneOf": target_rules}
    return schema
