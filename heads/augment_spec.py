"""The `--aug` grammar, in one place: its words for help and errors, and the one parser of a spec string.

    parse_spec("noise:0.1,mixup:0.4") == [StepSpec("noise", (0.1,)), StepSpec("mixup", (0.4, "across"))]

Text only (no torch): `heads.options` validates `--aug` with it and `heads.augment` builds its steps from
what it returns. A bad spec raises HeadsError naming the valid forms and their ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import HeadsError

VALID = "noise:SCALE, dropout:P, mixup:ALPHA[:within|across] (default: across classes), smote:K, views"
RANGES = "SCALE > 0, 0 < P < 1, ALPHA > 0, K an integer >= 1"
HELP = (
    "Feature-space augmentation, comma-separated: noise:SCALE, dropout:P, mixup:ALPHA[:within|across], "
    "smote:K, views (e.g. noise:0.1,mixup:0.4,smote:5,views). mixup mixes partners across classes by default "
    "(mixup:0.4 is mixup:0.4:across); :within mixes only tiles of the same class."
)  # the CLI's help; errors name VALID and RANGES

_FORMS = {"noise": 1, "dropout": 1, "mixup": 2, "smote": 1, "views": 0}  # most parameters per step


@dataclass(frozen=True)
class StepSpec:
    """One parsed step: its name and checked parameters (mixup: alpha and "within" or "across")."""

    name: str
    params: tuple[float | int | str, ...] = ()


def fail(problem: str) -> HeadsError:
    """The spec error: the problem, then the valid forms and their ranges."""
    return HeadsError(f"{problem}; valid: {VALID} ({RANGES})")


def _number(item: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise fail(f"augmentation '{item}': {name} must be a number, got '{text}'") from None
    if not math.isfinite(value):
        raise fail(f"augmentation '{item}': {name} must be finite, got '{text}'")
    return value


def _parse_step(item: str) -> StepSpec:
    name, *params = [part.strip() for part in item.split(":")]
    if name not in _FORMS:
        raise fail(f"unknown augmentation '{name}'")
    required = 0 if name == "views" else 1
    if not required <= len(params) <= _FORMS[name]:
        form = next(f for f in VALID.split(", ") if f.split(":")[0] == name)
        raise fail(f"augmentation '{item}' takes the form {form}")
    if name == "views":
        return StepSpec("views")
    if name == "noise":
        scale = _number(item, "SCALE", params[0])
        if scale <= 0:
            raise fail(f"augmentation '{item}': SCALE must be > 0")
        return StepSpec("noise", (scale,))
    if name == "dropout":
        p = _number(item, "P", params[0])
        if not 0 < p < 1:
            raise fail(f"augmentation '{item}': P must be in (0, 1)")
        return StepSpec("dropout", (p,))
    if name == "mixup":
        alpha = _number(item, "ALPHA", params[0])
        if alpha <= 0:
            raise fail(f"augmentation '{item}': ALPHA must be > 0")
        mode = params[1] if len(params) > 1 else "across"
        if mode not in ("within", "across"):
            raise fail(f"augmentation '{item}': mode must be within or across, got '{mode}'")
        return StepSpec("mixup", (alpha, mode))
    k = _number(item, "K", params[0])
    if k < 1 or k != int(k):
        raise fail(f"augmentation '{item}': K must be an integer >= 1")
    return StepSpec("smote", (int(k),))


def parse_spec(spec: str | None) -> list[StepSpec]:
    """Steps of "name[:param[:param]],..." in spec order ("" or None = none); HeadsError on a bad one."""
    if spec is None:
        spec = ""
    if not isinstance(spec, str):
        raise fail(f"augmentation spec must be a string, got {type(spec).__name__}")
    steps: list[StepSpec] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        step = _parse_step(item)
        if any(s.name == step.name for s in steps):
            raise fail(f"augmentation '{step.name}' given twice in '{spec}'")
        steps.append(step)
    return steps
