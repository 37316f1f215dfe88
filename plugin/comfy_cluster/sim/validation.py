"""``POST /prompt`` validation, a port of ComfyUI 0.3.64's ``execution.validate_prompt``.

Kept structurally close to the original so the same inputs give the same error types, messages,
``node_errors`` layout and ``dependent_outputs``. Exceptions that the real server lets escape (a
prompt that is not a dict of dicts) escape here too and become aiohttp's plain-text 500.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any, Optional

from .nodes import Dirs, NodeDef

Validated = dict[str, tuple[bool, list[dict], str]]


def _input_info(info: Mapping[str, Any], name: str) -> tuple[Any, str, dict]:
    for category in ("required", "optional", "hidden"):
        spec = info.get("input", {}).get(category, {})
        if name in spec:
            entry = spec[name]
            if isinstance(entry, str):  # hidden inputs are bare strings
                return entry, category, {}
            extra = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            return entry[0], category, extra
    return None, "", {}


def _type_ok(received: Any, wanted: Any) -> bool:
    """comfy_execution.validation.validate_node_input (without the strict mode)."""
    if received == wanted or received == "*" or wanted == "*":
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    return got <= want


def _ordered_inputs(info: Mapping[str, Any]) -> list[str]:
    order = info.get("input_order") or {}
    names: list[str] = []
    for category in ("required", "optional"):
        names.extend(order.get(category) or list(info.get("input", {}).get(category, {})))
    return names


def _full_type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def validate_inputs(
    prompt: Mapping[str, Any],
    item: str,
    validated: Validated,
    classes: Mapping[str, NodeDef],
    dirs: Dirs,
) -> tuple[bool, list[dict], str]:
    if item in validated:
        return validated[item]
    node = prompt[item]
    inputs = node["inputs"]
    node_def = classes[node["class_type"]]
    info = node_def.info
    errors: list[dict] = []
    valid = True
    for x in _ordered_inputs(info):
        input_type, category, extra = _input_info(info, x)
        if x not in inputs:
            if category == "required":
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": f"{x}",
                        "extra_info": {"input_name": x},
                    }
                )
            continue
        val = inputs[x]
        cfg = [input_type, extra]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(
                    {
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of "
                        "[node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": cfg, "received_value": val},
                    }
                )
                continue
            o_id = val[0]
            o_class = prompt[o_id]["class_type"]
            received = classes[o_class].return_types[val[1]]
            if not _type_ok(received, input_type):
                errors.append(
                    {
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received}) "
                        f"mismatch input_type({input_type})",
                        "extra_info": {
                            "input_name": x,
                            "input_config": cfg,
                            "received_type": received,
                            "linked_node": val,
                        },
                    }
                )
                continue
            try:
                r = validate_inputs(prompt, o_id, validated, classes, dirs)
                if r[0] is False:
                    valid = False
                    continue
            except Exception as ex:
                valid = False
                validated[o_id] = (
                    False,
                    [
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": x,
                                "input_config": cfg,
                                "exception_message": str(ex),
                                "exception_type": _full_type_name(ex),
                                "traceback": traceback.format_tb(ex.__traceback__),
                                "linked_node": val,
                            },
                        }
                    ],
                    o_id,
                )
                continue
        else:
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[x] = val
                if input_type == "INT":
                    val = int(val)
                elif input_type == "FLOAT":
                    val = float(val)
                elif input_type == "STRING":
                    val = str(val)
                elif input_type == "BOOLEAN":
                    val = bool(val)
                inputs[x] = val
            except Exception as ex:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {
                            "input_name": x,
                            "input_config": cfg,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    }
                )
                continue
            if x in node_def.validated_inputs:
                continue
            if "min" in extra and val < extra["min"]:
                errors.append(
                    {
                        "type": "value_smaller_than_min",
                        "message": f"Value {val} smaller than min of {extra['min']}",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": cfg, "received_value": val},
                    }
                )
                continue
            if "max" in extra and val > extra["max"]:
                errors.append(
                    {
                        "type": "value_bigger_than_max",
                        "message": f"Value {val} bigger than max of {extra['max']}",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": cfg, "received_value": val},
                    }
                )
                continue
            if isinstance(input_type, list) or input_type == "COMBO":
                options = extra.get("options", []) if input_type == "COMBO" else input_type
                if val not in options:
                    config: Optional[list] = cfg
                    if len(options) > 20:
                        list_info = f"(list of length {len(options)})"
                        config = None
                    else:
                        list_info = str(options)
                    errors.append(
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": config,
                                "received_value": val,
                            },
                        }
                    )
                    continue
    if node_def.validate is not None and not errors:
        args = {k: inputs[k] for k in node_def.validated_inputs if k in inputs}
        r = node_def.validate(args, dirs)
        if r is not True:
            for x in args:
                details = f"{x}" if r is False else f"{x} - {r}"
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {"input_name": x},
                    }
                )
    ret = (False, errors, item) if errors or valid is not True else (True, [], item)
    validated[item] = ret
    return ret


def validate_prompt(
    prompt: Any,
    classes: Mapping[str, NodeDef],
    dirs: Dirs,
    partial_execution_targets: Optional[list[str]] = None,
) -> tuple[bool, Optional[dict], list[str], dict]:
    """(valid, error, outputs_to_execute, node_errors), exactly as the server's 4-tuple."""
    outputs = set()
    for x in prompt:
        if "class_type" not in prompt[x]:
            error = {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": f"Node ID '#{x}'",
                "extra_info": {},
            }
            return False, error, [], {}
        class_type = prompt[x]["class_type"]
        node_def = classes.get(class_type)
        if node_def is None:
            error = {
                "type": "invalid_prompt",
                "message": f"Cannot execute because node {class_type} does not exist.",
                "details": f"Node ID '#{x}'",
                "extra_info": {},
            }
            return False, error, [], {}
        if node_def.output_node and (
            partial_execution_targets is None or x in partial_execution_targets
        ):
            outputs.add(x)
    if not outputs:
        error = {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        }
        return False, error, [], {}

    good_outputs = set()
    errors: list[tuple[str, list[dict]]] = []
    node_errors: dict[str, dict] = {}
    validated: Validated = {}
    for o in sorted(outputs, key=lambda k: list(prompt).index(k)):
        valid = False
        reasons: list[dict] = []
        try:
            valid, reasons, _ = validate_inputs(prompt, o, validated, classes, dirs)
        except Exception as ex:
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": _full_type_name(ex),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                }
            ]
            validated[o] = (False, reasons, o)
        if valid is True:
            good_outputs.add(o)
        else:
            errors.append((o, reasons))
            for node_id, result in validated.items():
                if result[0] is not True and len(result[1]) > 0:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": result[1],
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(o)
    if not good_outputs:
        details = "\n".join(
            f"{err['message']}: {err['details']}" for _, errs in errors for err in errs
        )
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return False, error, list(good_outputs), node_errors
    return True, None, list(good_outputs), node_errors
