"""Spark's casts emulated with numpy and pandas: a raw value as Spark stores it for a column type, and as the
string Spark's ANSI cast gives it (what the StringIndexer saw)."""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import numpy as np
import pandas as pd

from continuous_training.errors import PipelineError

INTEGRAL_TYPES = {"tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long"}
FLOATING_TYPES = {"float", "double"}
_TRUE_STRINGS, _FALSE_STRINGS = {"t", "true", "y", "yes", "1"}, {"f", "false", "n", "no", "0"}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _decimal_type(spark_type: str) -> tuple[int, int] | None:
    """(precision, scale) of a `decimal(p,s)` type; None for other types."""
    if not spark_type.startswith("decimal("):
        return None
    precision, scale = spark_type[len("decimal("):-1].split(",")
    return int(precision), int(scale)


def is_numeric(spark_type: str) -> bool:
    """True for an integral, floating or `decimal(p,s)` Spark type name (as the spec normalizes it)."""
    return spark_type in INTEGRAL_TYPES or spark_type in FLOATING_TYPES or _decimal_type(spark_type) is not None


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _spark_decimal(value: Any, precision: int, scale: int) -> Decimal:
    """`CAST(value AS DECIMAL(p,s))`: HALF_UP on the value's decimal text (a float's shortest repr, as Spark's
    Double.toString); a value with more than p - s integer digits is an error, as under Spark's ANSI mode."""
    try:
        number = Decimal(str(value).strip()).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP,
                                                      context=Context(prec=precision))
        if number.is_finite():
            return number
    except ArithmeticError:
        pass
    raise ValueError(f"{value!r} is not a decimal({precision},{scale})")


def _spark_boolean(value: Any) -> bool:
    """`CAST(value AS BOOLEAN)`: trimmed, case-insensitive t/true/y/yes/1 and f/false/n/no/0; numbers: non-zero."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_STRINGS or text in _FALSE_STRINGS:
            return text in _TRUE_STRINGS
        raise ValueError(f"{value!r} is not a boolean (true/false, t/f, yes/no, y/n, 1/0)")
    if isinstance(value, int | float | Decimal | np.number):
        return value != 0
    raise ValueError(f"{value!r} is not a boolean")


def _spark_integer(value: Any, spark_type: str) -> int:
    """`CAST(value AS <integral type>)`: integer text only (as under Spark's ANSI mode); numbers truncated."""
    if isinstance(value, str):
        if not _INTEGER_TEXT.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not an integer ({spark_type})")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError, ArithmeticError):
        raise ValueError(f"{value!r} is not an integer ({spark_type})") from None


def as_spark_numeric(values: np.ndarray, spark_type: str) -> np.ndarray:
    """Doubles holding what Spark stores for a column of this type (NaN stays NaN)."""
    if spark_type in INTEGRAL_TYPES:
        return np.trunc(values)
    if spark_type == "float":
        return values.astype(np.float32).astype(np.float64)
    decimal = _decimal_type(spark_type)
    if decimal is not None:
        return np.array([value if math.isnan(value) else float(_spark_decimal(value, *decimal))
                         for value in values.tolist()], dtype=np.float64)
    return values


def numeric_values(series: pd.Series, spark_type: str) -> np.ndarray:
    """A raw numeric column as Spark stores it, as doubles (NaN for nulls); decimals from each value's own text."""
    decimal = _decimal_type(spark_type)
    try:
        if decimal is not None:
            return np.array([math.nan if _is_null(value) else float(_spark_decimal(value, *decimal))
                             for value in series.tolist()], dtype=np.float64)
        values = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"model input: column {series.name!r} must be numeric ({spark_type}): {error}") from None
    return as_spark_numeric(values, spark_type)


def _java_number(text: str) -> str:
    """Java's Double/Float.toString layout for the shortest decimal digits in `text` (a finite number)."""
    number = Decimal(text)
    if number == 0:
        return "-0.0" if number.is_signed() else "0.0"
    sign = "-" if number < 0 else ""
    number = abs(number).normalize()
    if Decimal("1e-3") <= number < Decimal("1e7"):
        plain = f"{number:f}"
        return sign + (plain if "." in plain else f"{plain}.0")
    digits = "".join(map(str, number.as_tuple().digits))
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{number.adjusted()}"


def spark_string(value: Any, spark_type: str) -> str | None:
    """`CAST(value AS STRING)` as Spark computes it for a value of the given column type; None for null.

    Raises ValueError for a value Spark could not cast to that type."""
    if _is_null(value):
        return None
    if spark_type == "string":
        return value if isinstance(value, str) else str(value)
    if spark_type == "boolean":
        return "true" if _spark_boolean(value) else "false"
    if spark_type in INTEGRAL_TYPES:
        return str(_spark_integer(value, spark_type))
    if spark_type in FLOATING_TYPES:
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return _java_number(str(np.float32(number)) if spark_type == "float" else repr(number))
    decimal = _decimal_type(spark_type)
    if decimal is not None:
        return f"{_spark_decimal(value, *decimal):f}"
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if spark_type == "date":
        return stamp.strftime("%Y-%m-%d")
    text = stamp.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{stamp.microsecond:06d}".rstrip("0") if stamp.microsecond else text


