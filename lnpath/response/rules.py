"""A small rule vocabulary over index components, evaluated on bounds (spec §3.3).

Some response definitions cannot be written with the four AI/CI totals: Zickert 2014 counts a
follow-up "class I, II or III/IV-C" as a response, where III/IV-C means every glomerular
activity item is absent. A rule here is plain data (JSON/YAML-ready)::

    {"any": [{"field": "class_fu", "op": "in", "value": ["I", "II"]},
             {"all": [{"field": "class_fu", "op": "has", "value": ["III", "IV"]},
                      {"field": "glomerular_activity_fu", "op": "==", "value": 0}]}]}

Fields come from one baseline/follow-up pair (``_bl`` / ``_fu`` suffix): ``ai``, ``ci``, each of
the ten component scores (0-3, unweighted), ``glomerular_activity`` (the five glomerular AI items,
weighted: AI without interstitial inflammation, 0-21) and ``class`` (the ISN/RPS proposal), plus
``delta_ai`` and ``delta_ci``. Every number is an interval: an unassessed component spans the
scores its missing glomeruli allow, so a comparison is true, false or open (``None``), and
``all`` / ``any`` / ``not`` combine with Kleene logic. A rule is decided whenever its bounds
decide it, and open only when the missing calls could go either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lnpath.core.errors import InputError
from lnpath.response.sides import (
    AI_COMPONENTS,
    CI_COMPONENTS,
    BiopsySide,
    SideIndex,
    parse_alternatives,
    parse_class,
)

__all__ = ["FIELDS", "PairFields", "check_rule", "evaluate", "pair_fields", "rule_text"]

_NUMERIC_OPS = ("<=", "<", ">=", ">", "==", "!=")
_CLASS_OPS = ("in", "has")
_CLASSES = ("I", "II", "III", "IV", "V", "VI")
#: The five glomerular activity items (AI without interstitial inflammation).
GLOMERULAR_ACTIVITY = AI_COMPONENTS[:5]

_PER_SIDE = ("ai", "ci", "glomerular_activity", "class", *AI_COMPONENTS, *CI_COMPONENTS)
#: Every field a rule may name.
FIELDS: tuple[str, ...] = (
    *(f"{name}_{s}" for s in ("bl", "fu") for name in _PER_SIDE),
    "delta_ai",
    "delta_ci",
)

Interval = tuple[int, int]
Classes = tuple[frozenset[str], ...]  # every class set the proposal may turn out to be


@dataclass(frozen=True)
class PairFields:
    """The values a rule reads from one pair: integer intervals and possible class sets."""

    numbers: dict[str, Interval]
    classes: dict[str, Classes]
    why_open: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """``{field: {"value": v or None, "range": [lo, hi]}}``; classes list their options."""
        out: dict[str, Any] = {}
        for name, (lo, hi) in self.numbers.items():
            out[name] = {"value": lo if lo == hi else None, "range": [lo, hi]}
        for name, options in self.classes.items():
            shown = ["+".join(c for c in _CLASSES if c in o) or "none" for o in options]
            out[name] = {"value": shown[0] if len(shown) == 1 else None, "possible": shown}
        return out


def _index_range(index: SideIndex) -> Interval:
    lo = hi = 0
    for c in index.components.values():
        low, high = _component_range(c)
        lo, hi = lo + low * c.weight, hi + high * c.weight
    return lo, hi


def _component_range(c: Any) -> Interval:
    if c.score is not None:
        return int(c.score), int(c.score)
    low, high = c.score_range or (0, 3)
    return int(low), int(high)


def _class_options(side: BiopsySide) -> tuple[Classes, str]:
    """What the proposal can still be, and why it is open: one set when decided; I/II/V when
    light microscopy found no LN lesion; everything when the class is not determinable."""
    if not side.class_determined:
        return tuple(frozenset({c}) for c in _CLASSES), "not determinable: lesions not assessed"
    found = parse_class(side.class_proposal)
    if found is None:
        options = (frozenset({"I"}), frozenset({"II"}), frozenset({"V"}))
        return options, "no LN lesion by light microscopy; I/II vs V needs IF/EM"
    alternatives = parse_alternatives(side.class_alternative)
    if not alternatives:
        return (found,), ""
    # an alternative replaces the lesion-driven part (I/II, III/IV, or VI that activity would
    # rule out) and keeps the rest (+V); VI, which unassessed global sclerosis calls could
    # reach, stands alone (§2.2 decides VI before the membranous component)
    rest = found - {"I", "II", "III", "IV", "VI"}
    possible = [found, *(a if "VI" in a else a | rest for a in alternatives)]
    why = []
    for alternative in alternatives:
        name = "+".join(c for c in _CLASSES if c in alternative)
        if alternative == frozenset({"II"}):
            why.append(f"{name} if mesangial hypercellularity is present")
        elif "VI" in alternative and "VI" not in found:
            why.append(f"{name} if its unassessed global sclerosis calls were positive")
        else:
            why.append(f"{name} if its unassessed glomeruli were involved")
    return tuple(dict.fromkeys(possible)), "; ".join(why)


def pair_fields(bl: BiopsySide, fu: BiopsySide) -> PairFields:
    """Every field of :data:`FIELDS` for one pair."""
    numbers: dict[str, Interval] = {}
    classes: dict[str, Classes] = {}
    why: dict[str, str] = {}
    for suffix, side in (("bl", bl), ("fu", fu)):
        numbers[f"ai_{suffix}"] = _index_range(side.activity)
        numbers[f"ci_{suffix}"] = _index_range(side.chronicity)
        lo = hi = 0
        for name in GLOMERULAR_ACTIVITY:
            c = side.activity.components[name]
            low, high = _component_range(c)
            lo, hi = lo + low * c.weight, hi + high * c.weight
        numbers[f"glomerular_activity_{suffix}"] = (lo, hi)
        for index in (side.activity, side.chronicity):
            for name, c in index.components.items():
                numbers[f"{name}_{suffix}"] = _component_range(c)
        classes[f"class_{suffix}"], why[f"class_{suffix}"] = _class_options(side)
    for key, a, b in (("delta_ai", "ai_bl", "ai_fu"), ("delta_ci", "ci_bl", "ci_fu")):
        numbers[key] = (numbers[b][0] - numbers[a][1], numbers[b][1] - numbers[a][0])
    return PairFields(numbers, classes, why)


def check_rule(rule: Any, where: str = "rule") -> None:
    """Refuse a malformed rule with one line naming the part that is wrong."""
    if not isinstance(rule, Mapping):
        raise InputError(f"{where}: a rule is a mapping (field/op/value, all, any or not)")
    if "all" in rule or "any" in rule:
        key = "all" if "all" in rule else "any"
        parts = rule[key]
        if len(rule) != 1 or not isinstance(parts, Sequence) or isinstance(parts, str) or not parts:
            raise InputError(f"{where}: '{key}' takes a non-empty list of rules and nothing else")
        for i, part in enumerate(parts):
            check_rule(part, f"{where}.{key}[{i}]")
        return
    if "not" in rule:
        if len(rule) != 1:
            raise InputError(f"{where}: 'not' takes one rule and nothing else")
        check_rule(rule["not"], f"{where}.not")
        return
    if set(rule) != {"field", "op", "value"}:
        raise InputError(f"{where}: a condition has exactly the keys field, op and value")
    field, op, value = rule["field"], rule["op"], rule["value"]
    if field not in FIELDS:
        raise InputError(f"{where}: unknown field {field!r} (known: {', '.join(FIELDS)})")
    if str(field).startswith("class_"):
        if op not in _CLASS_OPS:
            raise InputError(f"{where}: {field} takes op {' or '.join(_CLASS_OPS)}, not {op!r}")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, Sequence) or not values or any(v not in _CLASSES for v in values):
            raise InputError(f"{where}: {field} values must be classes of {', '.join(_CLASSES)}")
        return
    if op not in _NUMERIC_OPS:
        raise InputError(f"{where}: {field} takes op {', '.join(_NUMERIC_OPS)}, not {op!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {field} is compared with a number, not {value!r}")


def _compare(lo: int, hi: int, op: str, v: float) -> bool | None:
    """True / False when every value in [lo, hi] agrees, None when the interval straddles."""
    tests = {
        "<=": (hi <= v, lo > v),
        "<": (hi < v, lo >= v),
        ">=": (lo >= v, hi < v),
        ">": (lo > v, hi <= v),
        "==": (lo == hi == v, v < lo or v > hi),
        "!=": (v < lo or v > hi, lo == hi == v),
    }
    true, false = tests[op]
    return True if true else False if false else None


def _class_test(options: Classes, op: str, wanted: frozenset[str]) -> bool | None:
    results = {o <= wanted if op == "in" else bool(o & wanted) for o in options}
    return results.pop() if len(results) == 1 else None


def evaluate(rule: Mapping[str, Any], fields: PairFields, open_: list[str] | None = None) -> Any:
    """Kleene value of ``rule``; ``open_`` collects the conditions that were left open."""
    if "all" in rule or "any" in rule:
        key = "all" if "all" in rule else "any"
        values = [evaluate(r, fields, open_) for r in rule[key]]
        decisive = key == "any"
        if decisive in values:
            return decisive
        return None if None in values else not decisive
    if "not" in rule:
        value = evaluate(rule["not"], fields, open_)
        return None if value is None else not value
    field, op, value = rule["field"], rule["op"], rule["value"]
    if field.startswith("class_"):
        wanted = frozenset([value] if isinstance(value, str) else value)
        options = fields.classes[field]
        result = _class_test(options, op, wanted)
        if result is None and open_ is not None:
            shown = " or ".join("+".join(c for c in _CLASSES if c in o) for o in options)
            _note(open_, f"{field} could be {shown} ({fields.why_open[field]})")
    else:
        lo, hi = fields.numbers[field]
        result = _compare(lo, hi, op, value)
        if result is None and open_ is not None:
            _note(open_, f"{field} lies in {lo}-{hi}")
    return result


def _note(open_: list[str], condition: str) -> None:
    """Collect an open condition once: a field a rule tests twice is open for one reason."""
    if condition not in open_:
        open_.append(condition)


def rule_text(rule: Mapping[str, Any]) -> str:
    """The rule as one line, e.g. ``class_fu in {I, II} or (... and ...)``."""
    if "all" in rule or "any" in rule:
        key = "all" if "all" in rule else "any"
        joined = f" {'and' if key == 'all' else 'or'} ".join(
            f"({rule_text(r)})" if ("all" in r or "any" in r) else rule_text(r) for r in rule[key]
        )
        return joined
    if "not" in rule:
        return f"not ({rule_text(rule['not'])})"
    value = rule["value"]
    if rule["field"].startswith("class_"):
        values = [value] if isinstance(value, str) else value
        return f"{rule['field']} {rule['op']} {{{', '.join(values)}}}"
    return f"{rule['field']} {rule['op']} {value}"
