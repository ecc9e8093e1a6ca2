"""Decoding of request bodies (JSON / YAML) and application of non-apply patches."""

from __future__ import annotations

import json
from typing import Any

import yaml

from . import errors as E
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch


def parse_json(raw: bytes, what: str) -> Any:
    """Decode a JSON request body or raise 400."""
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise E.bad_request(
            f"the object provided is unrecognized (must be of type {what}): "
            f"couldn't get version/kind; json parse error: {exc}"
        ) from None


def parse_apply_body(raw: bytes) -> Any:
    """Decode an apply body: JSON first, then YAML."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise E.bad_request(f"error decoding YAML: {exc}") from None


def patch_document(ctype: str, body: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Apply a decoded non-apply patch of the given content type to a document."""
    try:
        if ctype == "application/json-patch+json":
            merged = json_patch(doc, body)
        elif not isinstance(body, dict):
            raise E.bad_request("the body of a merge patch must be a JSON object")
        elif ctype == "application/strategic-merge-patch+json":
            merged = strategic_merge_patch(doc, body)
        else:
            merged = merge_patch(doc, body)
    except PatchError as exc:
        raise E.unprocessable_patch(str(exc)) from None
    if not isinstance(merged, dict):
        raise E.bad_request("patched object is not a JSON object")
    return merged
