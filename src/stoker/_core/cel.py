"""CEL expressions: compiled when a task is declared, evaluated when a run is created.

Expressions see ``input`` (the run's input as JSON values) and ``additional_metadata``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from stoker.errors import DeclarationError, InvalidRequestError


@lru_cache(maxsize=4096)
def compile_expression(expression: str) -> Any:
    """The compiled program; ValueError with the parse error when it does not parse."""
    # Imported on first use: the cel package loads its CLI (prompt_toolkit) on import, a
    # large share of the start-up of every process that never meets an expression.
    import cel

    return cel.compile(expression)


def check_expression(expression: str, what: str) -> None:
    """Raises DeclarationError naming ``what``, the expression and the parse error."""
    if not isinstance(expression, str) or not expression.strip():
        raise DeclarationError(f"{what}: the CEL expression must be a non-empty string")
    try:
        compile_expression(expression)
    except (ValueError, RuntimeError) as exc:
        raise DeclarationError(f"{what}: invalid CEL expression {expression!r}: {exc}") from None


def evaluate(expression: str, input: Any, additional_metadata: dict[str, Any], what: str) -> Any:
    """The expression's value for one run; InvalidRequestError saying why it failed."""
    try:
        program = compile_expression(expression)
        return program.execute({"input": input, "additional_metadata": additional_metadata})
    except Exception as exc:
        raise InvalidRequestError(
            f"{what}: the CEL expression {expression!r} failed on this run: "
            f"{type(exc).__name__}: {exc}"
        ) from None
