"""Tracing formulas into Python source for the online backend.

A formula of :mod:`oihedge.features.formulas` is called once with symbolic inputs
(:class:`Sym`) and ``ops`` that record each operation (:class:`TraceOps`); the
recording is straight-line code performing the same floating-point operations in the
same order as calling the formula with :data:`oihedge.features.formulas.SCALAR_OPS`.
:class:`Source` collects the generated lines and the objects they refer to, and
compiles them under a file name :mod:`linecache` knows (tracebacks show the line).
"""

from __future__ import annotations

import hashlib
import linecache
import math
from collections.abc import Callable, Sequence
from typing import Any

from oihedge.features import formulas as f

ERRORS = (ArithmeticError, ValueError, TypeError)
_COMPARISONS = (">=", ">", "<=", "<")
_LOGICAL = ("|", "&")


class Source:
    """Lines of generated code and the objects they refer to by name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"ERRORS": ERRORS}
        self._ids: dict[int, str] = {}
        self._temps = 0
        self.names.update({"_log": math.log, "_sqrt": math.sqrt, "_abs": abs})

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def bind(self, obj: Any, hint: str) -> str:
        """A global name for ``obj`` in the generated module."""
        key = id(obj)
        if key not in self._ids:
            name = f"{hint}_{len(self._ids)}"
            self._ids[key] = name
            self.names[name] = obj
        return self._ids[key]

    def formula(
        self,
        indent: int,
        target: str,
        fn: f.Formula,
        args: Sequence[str],
        consts: Sequence[float],
        *,
        check: Sequence[str] | None = None,
        present: Sequence[str] = (),
    ) -> None:
        """``target = fn(OPS, *args, *consts)`` with the null rules of the batch path.

        The formula is traced once into straight-line code (the same operations in the
        same order as calling it with :data:`oihedge.features.formulas.SCALAR_OPS`), so a bar
        pays for the arithmetic, not for the calls. ``check``: the inputs tested for
        None (all by default); ``present``: inputs the caller knows are never None.
        """
        tracer = Tracer(self)
        checked = list(args if check is None else check)
        tracer.nullable.update(a for a in args if a not in checked and a not in present)
        out = fn(TraceOps(tracer), *[Sym(tracer, a) for a in args], *[float(c) for c in consts])
        guard = " or ".join(f"{a} is None" for a in checked)
        pad = indent
        if guard:
            self.emit(indent, f"if {guard}:")
            self.emit(indent + 1, f"{target} = None")
            self.emit(indent, "else:")
            pad = indent + 1
        lines = list(tracer.lines)
        last = f"{out.name} = " if isinstance(out, Sym) else None
        if not (last and lines and lines[-1].startswith(last) and out.name not in args):
            self._result(pad, target, tracer, [*lines, f"{target} = {operand(out)}"], out)
        elif out.name in tracer.wheres:
            # a final where is a branch: each side checked as what it is (a None is null,
            # a bool finite, a number only finite)
            cond, a, b = tracer.wheres[out.name]
            if lines[:-1]:
                self.emit(pad, "try:")
                for line in lines[:-1]:
                    self.emit(pad + 1, line)
                self.emit(pad, "except ERRORS:")
                self.emit(pad + 1, f"{target} = None")
                self.emit(pad, "else:")
                pad += 1
            self.emit(pad, f"if {operand(cond)}:")
            self._checked(pad + 1, target, tracer, a)
            self.emit(pad, "else:")
            self._checked(pad + 1, target, tracer, b)
        else:  # the last operation writes the target itself (no temporary, no copy)
            lines[-1] = f"{target} = {lines[-1][len(last) :]}"
            self._result(pad, target, tracer, lines, out)

    def _result(self, pad: int, target: str, tracer: Tracer, lines: list[str], out: Any) -> None:
        """The traced ``lines`` (the last one writing ``target``, the value ``out``) in a
        try, the result checked."""
        self.emit(pad, "try:")
        for line in lines:
            self.emit(pad + 1, line)
        self.emit(pad, "except ERRORS:")
        self.emit(pad + 1, f"{target} = None")
        checks = self._checks(target, tracer, out)
        if checks:
            self.emit(pad, "else:")
            for line in checks:
                self.emit(pad + 1, line)

    def _checked(self, pad: int, target: str, tracer: Tracer, value: Any) -> None:
        """``target = value``, then set to None unless finite (what it may be, checked)."""
        self.emit(pad, f"{target} = {operand(value)}")
        for line in self._checks(target, tracer, value):
            self.emit(pad, line)

    @staticmethod
    def _checks(target: str, tracer: Tracer, value: Any) -> list[str]:
        """The null trace: an operation's result is never None (only an unguarded input
        or a where's may be), a comparison's bool is finite, None needs no check."""
        if value is None or tracer.is_bool(value):
            return []
        test = f"{target} - {target} != 0.0"
        if tracer.may_be_none(value):
            test = f"{target} is not None and {test}"
        return [f"if {test}:", f"    {target} = None"]

    def fresh(self) -> str:
        self._temps += 1
        return f"q{self._temps}"

    def compile(self, name: str, label: str = "") -> Callable[..., Any]:
        """The function ``name`` of the generated lines, compiled under the file name
        :meth:`filename` gives, whose lines :mod:`linecache` holds: a traceback through
        the generated code shows the line that raised."""
        text = "\n".join(self.lines) + "\n"
        filename = self.filename(name, label)
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        namespace = dict(self.names)
        exec(compile(text, filename, "exec"), namespace)  # noqa: S102
        return namespace[name]

    def filename(self, name: str, label: str = "") -> str:
        """``<oihedge online LABEL NAME HASH>``: what the code is, and the first 10 hex
        digits of its sha256 (one entry per distinct source, the same in every run)."""
        digest = hashlib.sha256("\n".join(self.lines).encode("utf-8")).hexdigest()[:10]
        return f"<oihedge online {f'{label} ' if label else ''}{name} {digest}>"


class Tracer:
    """Records the operations a formula performs on its (symbolic) inputs."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.lines: list[str] = []
        #: names that may hold None: unguarded inputs and the wheres that may pick one
        self.nullable: set[str] = set()
        #: names holding a comparison's (or a logical combination's) bool
        self.bools: set[str] = set()
        #: per where's name: its condition and both sides
        self.wheres: dict[str, tuple[Any, Any, Any]] = {}

    def new(self, expr: str, *, nullable: bool = False, boolean: bool = False) -> Sym:
        name = self.source.fresh()
        self.lines.append(f"{name} = {expr}")
        if nullable:
            self.nullable.add(name)
        if boolean:
            self.bools.add(name)
        return Sym(self, name)

    def may_be_none(self, value: Any) -> bool:
        """Whether a traced value may be None: an arithmetic operation either raises or
        gives a number, so only None itself, an unguarded input or a where may."""
        if isinstance(value, Sym):
            return value.name in self.nullable
        return value is None

    def is_bool(self, value: Any) -> bool:
        return isinstance(value, bool) or (isinstance(value, Sym) and value.name in self.bools)


def operand(value: Any) -> str:
    if isinstance(value, Sym):
        return value.name
    if value is None:
        return "None"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float):
        return repr(float(value))
    raise TypeError(f"a formula may only combine inputs and numbers, got {value!r}")


class Sym:
    """A traced value: arithmetic and comparisons record a line of code."""

    __slots__ = ("name", "tracer")

    def __init__(self, tracer: Tracer, name: str) -> None:
        self.tracer = tracer
        self.name = name

    def _op(self, op: str, other: Any, reflected: bool = False) -> Sym:
        a, b = self.name, operand(other)
        expr = f"{b} {op} {a}" if reflected else f"{a} {op} {b}"
        if op in _LOGICAL:  # bools combined stay bools; anything else is not one
            both = self.tracer.is_bool(self) and self.tracer.is_bool(other)
            return self.tracer.new(expr, boolean=both)
        return self.tracer.new(expr, boolean=op in _COMPARISONS)

    def __add__(self, o: Any) -> Sym:
        return self._op("+", o)

    def __radd__(self, o: Any) -> Sym:
        return self._op("+", o, True)

    def __sub__(self, o: Any) -> Sym:
        return self._op("-", o)

    def __rsub__(self, o: Any) -> Sym:
        return self._op("-", o, True)

    def __mul__(self, o: Any) -> Sym:
        return self._op("*", o)

    def __rmul__(self, o: Any) -> Sym:
        return self._op("*", o, True)

    def __truediv__(self, o: Any) -> Sym:
        return self._op("/", o)

    def __rtruediv__(self, o: Any) -> Sym:
        return self._op("/", o, True)

    def __neg__(self) -> Sym:
        return self.tracer.new(f"-{self.name}")

    def __ge__(self, o: Any) -> Sym:  # type: ignore[override]
        return self._op(">=", o)

    def __gt__(self, o: Any) -> Sym:  # type: ignore[override]
        return self._op(">", o)

    def __le__(self, o: Any) -> Sym:  # type: ignore[override]
        return self._op("<=", o)

    def __lt__(self, o: Any) -> Sym:  # type: ignore[override]
        return self._op("<", o)

    def __or__(self, o: Any) -> Sym:
        return self._op("|", o)

    def __and__(self, o: Any) -> Sym:
        return self._op("&", o)

    def __bool__(self) -> bool:
        raise TypeError("a formula must not branch in Python on its inputs; use ops.where")


class TraceOps:
    """``ops`` that trace :data:`oihedge.features.formulas.SCALAR_OPS` operation for operation."""

    NULL = None

    def __init__(self, tracer: Tracer) -> None:
        self._t = tracer

    def div(self, a: Any, b: Any) -> Sym:
        return self._t.new(f"{operand(a)} / {operand(b)}")

    def log(self, x: Any) -> Sym:
        return self._t.new(f"_log({operand(x)})")

    def sqrt(self, x: Any) -> Sym:
        return self._t.new(f"_sqrt({operand(x)})")

    def abs(self, x: Any) -> Sym:
        return self._t.new(f"_abs({operand(x)})")

    def where(self, cond: Any, a: Any, b: Any) -> Sym:
        t = self._t
        out = t.new(
            f"{operand(a)} if {operand(cond)} else {operand(b)}",
            nullable=t.may_be_none(a) or t.may_be_none(b),
            boolean=t.is_bool(a) and t.is_bool(b),
        )
        t.wheres[out.name] = (cond, a, b)
        return out

    def maximum(self, a: Any, b: Any) -> Sym:
        x, y = operand(a), operand(b)
        return self._t.new(f"{x} if {x} >= {y} else {y}")

    def minimum(self, a: Any, b: Any) -> Sym:
        x, y = operand(a), operand(b)
        return self._t.new(f"{x} if {x} <= {y} else {y}")
