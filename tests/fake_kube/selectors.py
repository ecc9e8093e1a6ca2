"""Label and field selectors with Kubernetes parsing rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.',"
    " and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or"
    " '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
LABEL_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end"
    " with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for"
    " validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


class SelectorError(ValueError):
    """A selector string that cannot be parsed."""


def label_key_errors(key: str) -> list[str]:
    """Problems with a label/annotation key (empty list when valid)."""
    errs: list[str] = []
    name = key
    if "/" in key:
        prefix, _, name = key.partition("/")
        if "/" in name:
            return [
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and"
                " must start and end with an alphanumeric character (e.g. 'MyName',  or"
                " 'my.name',  or '123-abc', regex used for validation is"
                " '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain"
                " prefix and '/' (e.g. 'example.com/MyName')"
            ]
        if not prefix:
            errs.append("prefix part must be non-empty")
        elif len(prefix) > 253 or not DNS1123_SUBDOMAIN_RE.match(prefix):
            errs.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case"
                " alphanumeric characters, '-' or '.', and must start and end with an alphanumeric"
                " character (e.g. 'example.com', regex used for validation is"
                " '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            )
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not LABEL_NAME_RE.match(name):
        errs.append(LABEL_NAME_MSG)
    return errs


def label_value_errors(value: str) -> list[str]:
    """Problems with a label value (empty list when valid)."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not LABEL_VALUE_RE.match(value):
        errs.append(LABEL_VALUE_MSG)
    return errs


@dataclass(frozen=True)
class Requirement:
    """One label requirement: key, operator and values."""

    key: str
    op: str  # in | notin | exists | !exists | gt | lt
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label set satisfies this requirement."""
        op = self.op
        if op == "in":
            return labels.get(self.key) in self.values
        if op == "notin":
            return labels.get(self.key) not in self.values
        if op == "exists":
            return self.key in labels
        if op == "!exists":
            return self.key not in labels
        val = labels.get(self.key)
        if val is None:
            return False
        try:
            got, want = int(val), int(next(iter(self.values)))
        except ValueError:
            return False
        return got > want if op == "gt" else got < want


Selector = tuple[Requirement, ...]

_SET_RE = re.compile(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$")
_OP_RE = re.compile(r"^([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(.*)$")


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str) -> None:
    errs = label_key_errors(key)
    if errs:
        raise SelectorError(f'unable to parse requirement: key: Invalid value: "{key}": {errs[0]}')


def _check_value(key: str, value: str) -> None:
    errs = label_value_errors(value)
    if errs:
        raise SelectorError(
            f'unable to parse requirement: values[0][{key}]: Invalid value: "{value}": {errs[0]}'
        )


@lru_cache(maxsize=4096)
def parse_label_selector(text: str) -> Selector:
    """Parse a labelSelector query string; raises SelectorError."""
    text = text.strip()
    if not text:
        return ()
    reqs: list[Requirement] = []
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f"found '', expected: identifier in selector {text!r}")
        m = _SET_RE.match(part)
        if m:
            key, op, inner = m.group(1), m.group(2), m.group(3)
            _check_key(key)
            values = [v.strip() for v in inner.split(",")] if inner.strip() else []
            for v in values:
                _check_value(key, v)
            if not values and op == "in":
                raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
            reqs.append(Requirement(key, op, frozenset(values)))
            continue
        if part.startswith("!"):
            key = part[1:].strip()
            _check_key(key)
            reqs.append(Requirement(key, "!exists"))
            continue
        m = _OP_RE.match(part)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3).strip()
            _check_key(key)
            if op in (">", "<"):
                if not re.fullmatch(r"-?\d+", value):
                    raise SelectorError(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, "
                        "the value must be an integer"
                    )
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", frozenset([value])))
                continue
            _check_value(key, value)
            reqs.append(Requirement(key, "notin" if op == "!=" else "in", frozenset([value])))
            continue
        if re.fullmatch(r"[^\s=!(),<>]+", part):
            _check_key(part)
            reqs.append(Requirement(part, "exists"))
            continue
        raise SelectorError(
            f"unable to parse requirement: found '{part}', expected: in, notin, =, ==, !=, gt, lt"
        )
    return tuple(reqs)


def selector_from_object(sel: dict[str, Any] | None) -> Selector | None:
    """Convert a metav1.LabelSelector dict; None when absent."""
    if sel is None:
        return None
    reqs: list[Requirement] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append(Requirement(k, "in", frozenset([str(v)])))
    for expr in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(
            expr.get("operator", ""), "in"
        )
        reqs.append(Requirement(expr.get("key", ""), op, frozenset(expr.get("values") or [])))
    return tuple(reqs)


def selector_to_string(sel: dict[str, Any] | None) -> str:
    """Render a LabelSelector dict the way Scale.status.selector shows it."""
    if not sel:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator")
        vals = ",".join(sorted(e.get("values") or []))
        if op == "In":
            parts.append(f"{e['key']} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{e['key']} notin ({vals})")
        elif op == "Exists":
            parts.append(e["key"])
        else:
            parts.append(f"!{e['key']}")
    return ",".join(parts)


def matches(selector: Selector, labels: dict[str, str] | None) -> bool:
    """Whether labels satisfy every requirement (empty selector matches all)."""
    if not selector:
        return True
    lab = labels or {}
    return all(r.matches(lab) for r in selector)


FieldSelector = tuple[tuple[str, bool, str], ...]  # (path, equal?, value)


@lru_cache(maxsize=1024)
def parse_field_selector(text: str, allowed: tuple[str, ...]) -> FieldSelector:
    """Parse a fieldSelector; only metadata.name/namespace plus `allowed` paths are known."""
    out: list[tuple[str, bool, str]] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        path, op, value = m.group(1), m.group(2), m.group(3)
        if path not in ("metadata.name", "metadata.namespace") and path not in allowed:
            raise SelectorError(f"field label not supported: {path}")
        out.append((path, op != "!=", value))
    return tuple(out)


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_matches(sel: FieldSelector, obj: dict[str, Any]) -> bool:
    """Whether an object satisfies a parsed field selector."""
    return all((_field_value(obj, path) == value) == equal for path, equal, value in sel)
