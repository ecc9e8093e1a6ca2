"""Pydantic field types and validators shared by request schemas."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field

from db.domain import (
    FRAMEWORK_ALIASES,
    MODEL_FORMATS,
    model_path_error,
    name_error,
    normalize_framework,
)


def _name(value: str) -> str:
    error = name_error(value)
    if error:
        raise ValueError(error)
    return value


def _framework(value: str) -> str:
    framework = normalize_framework(value)
    if framework is None:
        known = ", ".join(sorted(set(FRAMEWORK_ALIASES.values())))
        raise ValueError(f"unknown framework {value!r}; use one of {known}")
    return framework


def _model_format(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in MODEL_FORMATS:
        raise ValueError(f"must be one of {', '.join(MODEL_FORMATS)}")
    return lowered


def _model_path(value: str) -> str:
    error = model_path_error(value)
    if error:
        raise ValueError(error)
    return value


def _description(value: str) -> str:
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ValueError("must not contain control characters")
    return value


ServiceName = Annotated[str, Field(max_length=63), AfterValidator(_name)]
Framework = Annotated[str, Field(max_length=64), AfterValidator(_framework)]
ModelFormat = Annotated[str, Field(max_length=32), AfterValidator(_model_format)]
ModelPath = Annotated[str, Field(max_length=512), AfterValidator(_model_path)]
Description = Annotated[str, Field(max_length=4096), AfterValidator(_description)]
Replicas = Annotated[int, Field(ge=1, le=1000)]
PositiveInt = Annotated[int, Field(ge=1, le=100_000)]
NonNegativeInt = Annotated[int, Field(ge=0, le=100_000)]
CallbackUrl = Annotated[str, Field(max_length=2048)]
# Ids are PostgreSQL BIGINTs: a larger number is a 422, not a database error.
DB_ID_MAX = 2**63 - 1
DbId = Annotated[int, Field(ge=1, le=DB_ID_MAX)]
# Public ids (svc-…, job-…, wh-…, msg_…) are short ASCII tokens: anything else names nothing,
# and is refused before a byte PostgreSQL cannot take (NUL) reaches a query.
PUBLIC_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=PUBLIC_ID_PATTERN)]
PublicId = Annotated[str, Field(min_length=1, max_length=64, pattern=PUBLIC_ID_PATTERN)]
