"""Environment-variable interpolation for manifest strings.

The syntax is the subset of POSIX/Compose substitution people already know:

* ``${VAR}`` — the value of ``VAR``; an error if ``VAR`` is unset.
* ``${VAR:-default}`` — ``default`` when ``VAR`` is unset *or empty*. The default may be
  empty and may itself contain ``${…}`` (evaluated only when needed).
* ``${VAR:?message}`` — an error carrying ``message`` when ``VAR`` is unset or empty.
* ``$$`` — a literal ``$``. A ``$`` not followed by ``{`` or ``$`` is kept as is, so prices
  and regexes survive without escaping.

The parser builds a small tree first and evaluates it afterwards, so that a syntax error is
reported even when the branch containing it would not be evaluated, and a default is never
evaluated when the variable is set (``${A:-${B}}`` with ``A`` set does not need ``B``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["InterpolationError", "interpolate"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A ``${…}`` expression is malformed or names a variable that must be set but is not."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class _Var:
    name: str
    op: str  # "" | ":-" | ":?"
    arg: tuple[str | _Var, ...]


_Node = str | _Var


def _parse(text: str, pos: int, *, nested: bool) -> tuple[tuple[_Node, ...], int]:
    """Parse from ``pos`` up to the end (top level) or the closing ``}`` (inside a default)."""
    nodes: list[_Node] = []
    buf: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if nested and ch == "}":
            break
        if ch != "$" or pos + 1 >= n or text[pos + 1] not in "{$":
            buf.append(ch)
            pos += 1
            continue
        if text[pos + 1] == "$":
            buf.append("$")
            pos += 2
            continue
        if buf:
            nodes.append("".join(buf))
            buf = []
        var, pos = _parse_var(text, pos)
        nodes.append(var)
    if buf:
        nodes.append("".join(buf))
    return tuple(nodes), pos


def _parse_var(text: str, start: int) -> tuple[_Var, int]:
    """Parse ``${…}`` starting at ``start`` (which points at ``$``)."""
    pos = start + 2
    m = _NAME.match(text, pos)
    if m is None:
        close = text.find("}", pos)
        shown = text[start : close + 1] if close >= 0 else text[start:]
        if close < 0:
            raise _unterminated(text, start)
        raise InterpolationError(
            f"invalid variable reference {shown!r}: a name must start with a letter or '_' "
            "and contain only letters, digits and '_'",
            hint="write $$ for a literal '$'",
        )
    name = m.group(0)
    pos = m.end()
    if pos >= len(text):
        raise _unterminated(text, start)
    if text[pos] == "}":
        return _Var(name, "", ()), pos + 1
    op = text[pos : pos + 2]
    if op not in (":-", ":?"):
        close = text.find("}", pos)
        if close < 0:
            raise _unterminated(text, start)
        raise InterpolationError(
            f"invalid variable reference {text[start : close + 1]!r}",
            hint=f"use ${{{name}}}, ${{{name}:-default}} or ${{{name}:?message}}",
        )
    arg, end = _parse(text, pos + 2, nested=True)
    if end >= len(text):
        raise _unterminated(text, start)
    return _Var(name, op, arg), end + 1


def _unterminated(text: str, start: int) -> InterpolationError:
    snippet = text[start : start + 30]
    return InterpolationError(
        f"unterminated variable reference starting at {snippet!r}: missing '}}'",
        hint="close it with '}', or write $$ for a literal '$'",
    )


def _evaluate(nodes: tuple[_Node, ...], env: Mapping[str, str], used: list[str]) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
            continue
        if node.name not in used:
            used.append(node.name)
        value = env.get(node.name)
        if node.op == "":
            if value is None:
                raise InterpolationError(
                    f"environment variable {node.name} is not set",
                    hint=f"set {node.name} or use ${{{node.name}:-default}}",
                )
            out.append(value)
        elif value:
            out.append(value)
        elif node.op == ":-":
            out.append(_evaluate(node.arg, env, used))
        else:
            message = _evaluate(node.arg, env, used)
            state = "empty" if value == "" else "not set"
            raise InterpolationError(
                f"environment variable {node.name} is {state}"
                + (f": {message}" if message else ""),
                hint=f"set {node.name}",
            )
    return "".join(out)


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """Substitute ``${…}`` expressions in ``text`` from ``env``.

    Returns the resulting string and the names of the variables the evaluation looked at,
    in order of first use (a registry token records where it came from this way). Raises
    :class:`InterpolationError`; its message names variables, never their values.
    """
    if "$" not in text:
        return text, ()
    nodes, _ = _parse(text, 0, nested=False)
    used: list[str] = []
    return _evaluate(nodes, env, used), tuple(used)
