"""The sandboxed Jinja environment every marketer's template runs in, and its errors.

A template in ``include/templates/`` is written by a marketer, so it is treated as untrusted code:

- ``ImmutableSandboxedEnvironment``: no attribute starting with ``_`` (``__class__``,
  ``__globals__``, ``_TemplateReference__context`` ...), no internals of functions, frames or
  generators, no method that changes a list or dict; every violation raises ``SecurityError``.
- Only data reaches a template: the context is dicts of text, numbers and dates
  (:mod:`huitouke.render.context`). Globals are reduced to ``range`` (the sandbox's, at most
  100,000 items), ``dict`` and ``namespace``; filters to a short list of harmless ones plus
  :func:`cny`, :func:`date_zh` and :func:`date_en`. ``safe`` is not among them: customer data in
  an e-mail is always escaped.
- ``*`` and ``**`` are intercepted, so ``{{ "x" * 10**9 }}`` is refused instead of eating memory.
- The loader is rooted at ``include/templates``: ``{% include %}``/``{% extends %}`` take names
  inside that folder only (``../`` and symbolic links that leave it are refused).
- ``StrictUndefined``: a misspelt variable or field fails instead of printing nothing.
- Autoescape for HTML e-mail templates (``*.html.j2``) only; SMS, e-mail text and call scripts
  are plain text. ``None`` prints as nothing (see the lint's warning about optional fields).

Every failure, at lint, compile or render time, becomes a :class:`TemplateError` naming the file,
the line and the variable: ``include/templates/sms/coupon_wave.txt.j2:3: coupon.valu: ...``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, nodes
from jinja2 import filters as jinja_filters
from jinja2.exceptions import (
    SecurityError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from huitouke.config import project_home

__all__ = [
    "ALLOWED_FILTERS",
    "MessageEnvironment",
    "TemplateError",
    "cny",
    "date_en",
    "date_zh",
    "display_path",
    "error_from_exception",
    "node_path",
    "template_environment",
    "templates_root",
]

# Jinja's own filters a marketer may use, plus ours (cny, date_zh, date_en).
ALLOWED_FILTERS: tuple[str, ...] = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "replace",
    "round",
    "sort",
    "string",
    "sum",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
)
# The longest text or list ``*`` may build.
MAX_REPEAT = 10_000


class TemplateError(Exception):
    """A marketer's template is broken. ``str()`` is ``file:line: variable: message``."""

    def __init__(self, message: str, *, file: str, line: int | None = None, variable: str | None = None):
        self.reason = message
        self.file = file
        self.line = line
        self.variable = variable
        super().__init__(self.describe())

    def __reduce__(self):  # keyword-only arguments: pickle (e.g. between Airflow processes) needs help
        return _rebuild_error, (type(self), self.reason, self.file, self.line, self.variable)

    def describe(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.variable}: {self.reason}" if self.variable else f"{where}: {self.reason}"

    def __str__(self) -> str:
        return self.describe()


def _rebuild_error(cls: type[TemplateError], reason: str, file: str, line: int | None, variable: str | None):
    return cls(reason, file=file, line=line, variable=variable)


def templates_root() -> Path:
    """``include/templates`` under the project home."""
    return project_home() / "include" / "templates"


def display_path(path: str | Path) -> str:
    """A template's path as people see it: relative to the project home when inside it."""
    path = Path(path)
    try:
        return path.resolve().relative_to(project_home()).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("cny expects an amount, got a bool")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        # The value itself stays out of the message: it may be a customer's data (and go to a log).
        raise TypeError(f"cny expects an amount, got a {type(value).__name__} that is not a number") from None


def cny(value: Any, symbol: bool = False) -> str:
    """An amount in yuan: ``20`` -> ``20元``, ``12.5`` -> ``12.50元``; ``symbol=True``: ``¥20``.

    Whole amounts have no decimals (``满199减20``); others have two.
    """
    if type(value) is int:  # the common case, fast
        return f"¥{value}" if symbol else f"{value}元"
    if value is None:
        return ""
    amount = _amount(value)
    text = f"{amount:.0f}" if amount == amount.to_integral_value() else f"{amount:.2f}"
    return f"¥{text}" if symbol else f"{text}元"


def _as_date(value: Any, filter_name: str) -> dt.date:
    if type(value) is dt.date:
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise TypeError(
        f"{filter_name} expects a date, got a {type(value).__name__}"
    )  # no value: may be personal


def date_zh(value: Any, style: str = "short") -> str:
    """``2025-11-25`` -> ``11月25日`` (short), ``2025年11月25日`` (long)."""
    if type(value) is dt.date and style == "short":  # the common case, fast
        return f"{value.month}月{value.day}日"
    if value is None:
        return ""
    day = _as_date(value, "date_zh")
    if style == "long":
        return f"{day.year}年{day.month}月{day.day}日"
    if style != "short":
        raise ValueError(f"date_zh style must be 'short' or 'long', not {style!r}")
    return f"{day.month}月{day.day}日"


_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_en(value: Any, style: str = "short") -> str:
    """``2025-11-25`` -> ``Nov 25`` (short), ``Nov 25, 2025`` (long)."""
    if value is None:
        return ""
    day = _as_date(value, "date_en")
    text = f"{_MONTHS_EN[day.month - 1]} {day.day}"
    if style == "long":
        return f"{text}, {day.year}"
    if style != "short":
        raise ValueError(f"date_en style must be 'short' or 'long', not {style!r}")
    return text


def _finalize(value: Any) -> Any:
    return "" if value is None else value


# ---------------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------------


class _ConfinedLoader(FileSystemLoader):
    """A FileSystemLoader that also refuses files whose real path leaves the root (symlinks)."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        super().__init__(str(self.root), encoding="utf-8")

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        if not Path(filename).resolve().is_relative_to(self.root):
            raise TemplateNotFound(template)
        return source, filename, uptodate


def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith((".html.j2", ".html"))


class MessageEnvironment(ImmutableSandboxedEnvironment):
    """The sandboxed environment of marketers' templates (see the module's documentation)."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, root: Path):
        super().__init__(
            loader=_ConfinedLoader(root),
            undefined=StrictUndefined,
            autoescape=_autoescape,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=True,
        )
        self.root = Path(root).resolve()
        self.filters = {name: jinja_filters.FILTERS[name] for name in ALLOWED_FILTERS}
        self.filters.update(cny=cny, date_zh=date_zh, date_en=date_en)
        self.globals = {"range": self.globals["range"], "dict": dict, "namespace": Namespace}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The context is dicts of data: ``customer.name`` reads the key, and only keys: a dict's
        # methods (``customer.items``) and internals are not reachable from a template. This also
        # spares the sandbox's AttributeError round trip for every field.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > MAX_REPEAT:
                        raise SecurityError(f"'*' would build more than {MAX_REPEAT:,} items")
            return left * right
        if operator == "**":
            if isinstance(right, int) and abs(right) > 100:
                raise SecurityError("'**' with an exponent above 100 is refused")
            return left**right
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=8)
def _environment(root: Path) -> MessageEnvironment:
    return MessageEnvironment(root)


def template_environment(root: Path | None = None) -> MessageEnvironment:
    """The sandboxed environment for the templates under ``root`` (default
    ``include/templates``); one per folder, shared (it caches compiled templates)."""
    return _environment(Path(root or templates_root()).resolve())


# ---------------------------------------------------------------------------------------------
# Errors for people
# ---------------------------------------------------------------------------------------------


def node_path(node: nodes.Node) -> str | None:
    """``customer.nmae``, ``''.__class__.__mro__``: an expression as the marketer wrote it."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Const):
        return repr(node.value)
    if isinstance(node, nodes.Getattr):
        base = node_path(node.node)
        return f"{base}.{node.attr}" if base else node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = node_path(node.node)
        return f"{base}[{node.arg.value!r}]" if base else None
    if isinstance(node, nodes.Tuple | nodes.List):
        items = [node_path(item) or "..." for item in node.items]
        return ("({})" if isinstance(node, nodes.Tuple) else "[{}]").format(", ".join(items))
    if isinstance(node, nodes.Call):
        base = node_path(node.node)
        return f"{base}()" if base else None
    return None


def _variable_on_line(env: MessageEnvironment, source: str | None, line: int | None, attr: str) -> str:
    """The dotted path, on ``line``, that ends with the attribute ``attr`` (``customer.nmae``)."""
    if source is None:
        return attr
    try:
        tree = env.parse(source)
    except TemplateSyntaxError:
        return attr
    candidates = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if name == attr and (line is None or node.lineno == line):
            candidates.append(node)
    for node in candidates:
        path = node_path(node)
        if path:
            return path
    return attr


def _template_frame(exc: BaseException, root: Path) -> tuple[str | None, int | None]:
    """The innermost template file and line in ``exc``'s (Jinja-rewritten) traceback."""
    found: tuple[str | None, int | None] = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2") or filename.startswith(str(root)):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined")
_MISSING_ATTR = re.compile(r"has no attribute '([^']+)'")
_UNSAFE_ATTR = re.compile(r"access to attribute '([^']+)' of '([^']+)' object is unsafe")
_NO_FILTER = re.compile(r"No (filter|test) named '([^']+)'")


def _syntax_error(exc: TemplateSyntaxError, env: MessageEnvironment, file: str | None) -> TemplateError:
    """A syntax error, an unknown filter or test (with the filters a template may use)."""
    where = exc.filename or file or "<template>"
    variable = None
    match = _NO_FILTER.search(exc.message or "")
    if match:
        variable = match.group(2)
    message = (exc.message or str(exc)).rstrip(".").replace("No filter named", "no filter named")
    if match and match.group(1) == "filter":
        message += f" (available: {', '.join(sorted(env.filters))})"
    return TemplateError(message, file=display_path(where), line=exc.lineno, variable=variable)


@dataclass(frozen=True)
class _RaisedAt:
    """Where in a template a render raised: the file as people see it, the line, its source."""

    env: MessageEnvironment
    shown: str
    line: int | None
    source: str | None

    @classmethod
    def of(cls, exc: BaseException, env: MessageEnvironment, file: str | None) -> _RaisedAt:
        filename, line = _template_frame(exc, env.root)
        source = None
        if filename:
            try:
                source = Path(filename).read_text(encoding="utf-8")
            except OSError:
                source = None
        return cls(env, display_path(filename) if filename else (file or "<template>"), line, source)

    def error(self, message: str, variable: str | None = None) -> TemplateError:
        return TemplateError(message, file=self.shown, line=self.line, variable=variable)

    def variable(self, attr: str) -> str:
        return _variable_on_line(self.env, self.source, self.line, attr)


def _not_found(exc: TemplateNotFound, at: _RaisedAt) -> TemplateError:
    root = display_path(at.env.root)
    message = (
        f"template {exc.name!r} not found in {root} (include and extend only templates inside that folder)"
    )
    return at.error(message, str(exc.name))


def _refused(exc: SecurityError, at: _RaisedAt) -> TemplateError:
    match = _UNSAFE_ATTR.search(str(exc))
    message = f"refused by the sandbox: {str(exc).rstrip('.')}. Templates may use the documented context only"
    return at.error(message, at.variable(match.group(1)) if match else None)


def _undefined(exc: UndefinedError, at: _RaisedAt) -> TemplateError:
    text = str(exc)
    match = _UNDEFINED_NAME.search(text)
    if match:
        return at.error(f"undefined variable {match.group(1)!r}", match.group(1))
    match = _MISSING_ATTR.search(text)
    if match:
        return at.error(f"undefined field {match.group(1)!r} ({text})", at.variable(match.group(1)))
    return at.error(text)


def error_from_exception(
    exc: BaseException, env: MessageEnvironment, file: str | None = None
) -> TemplateError:
    """A :class:`TemplateError` (file, line, variable) for anything a template raised."""
    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, TemplateSyntaxError) and not isinstance(exc, TemplateNotFound):
        return _syntax_error(exc, env, file)
    at = _RaisedAt.of(exc, env, file)
    if isinstance(exc, TemplateNotFound):
        return _not_found(exc, at)
    if isinstance(exc, SecurityError):
        return _refused(exc, at)
    if isinstance(exc, UndefinedError):
        return _undefined(exc, at)
    return at.error(f"{type(exc).__name__}: {exc}")
