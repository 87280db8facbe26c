"""A small, safe parser for the numbers users type: `0.5`, `-pi/4`, `3*pi/8`, `1e-3`; and the
one format for numbers shown in tables (`format_number`).

No `eval`: the text is parsed with `ast` and only numbers, `pi`, `tau`, unary ±, and the four
operators `+ - * /` are accepted; anything else (names, calls, powers) is refused with a
message that says what is allowed. Results must be finite.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from numbers import Integral
from typing import Any

from rope_interp.errors import RopeInterpError

_CONSTANTS = {"pi": math.pi, "tau": math.tau}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_LENGTH = 64


def parse_number(text: str, what: str = "value") -> float:
    """`text` → a finite float; raises `RopeInterpError` naming `what` and the text otherwise."""
    hint = (
        f"{what} takes a number such as 0.5, 1e-3 or -pi/4 (+ - * / and pi allowed); got {text!r}"
    )
    text = text.strip()
    if not text or len(text) > _MAX_LENGTH:
        raise RopeInterpError(hint + ".")
    try:
        value = _evaluate(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        raise RopeInterpError(hint + ".") from None
    if not math.isfinite(value):
        raise RopeInterpError(f"{what} must be finite; got {text!r}.")
    return value


def parse_numbers(text: str, what: str = "value") -> list[float]:
    """Comma-separated numbers (each as `parse_number`); raises on an empty list."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise RopeInterpError(f"{what} takes comma-separated numbers (e.g. 0,pi/4); got {text!r}.")
    return [parse_number(part, what) for part in parts]


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError(f"not allowed: {ast.dump(node)}")


def format_number(value: Any) -> str:
    """A table cell as text: integers whole, floats to 4 significant digits (scientific outside
    1e-3..1e5), NaN as "NaN"; anything else `str()`."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, Integral):  # int and numpy integers
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if value.is_integer() and magnitude < 1e9:
            return str(int(value))
        if magnitude >= 1e5 or magnitude < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_token_count(text: str | int, what: str = "--tokens") -> int:
    """`"100M"`, `"50k"`, `"1e6"`, `"2048"` → a positive int (k = 10³, M = 10⁶, B/G = 10⁹)."""
    if isinstance(text, int):
        value = float(text)
    else:
        stripped = str(text).strip()
        scale = _SUFFIXES.get(stripped[-1:].lower(), 1) if stripped else 1
        number = stripped[:-1] if scale != 1 else stripped
        hint = f"{what} takes a token count such as 4096, 50k, 100M or 1e6; got {text!r}."
        try:
            value = parse_number(number, what) * scale
        except RopeInterpError:
            raise RopeInterpError(hint) from None
    if value < 1 or value != int(value):
        raise RopeInterpError(f"{what} must be a whole number of tokens ≥ 1; got {text!r}.")
    return int(value)
