"""``--where``: a row filter that is data, never code.

A filter is stored in fit.json and re-applied by report, plot and predict, and fit.json files are shared, so
the text is parsed by the small grammar below (a hand-written tokenizer and recursive-descent parser) into a
tree of :class:`Compare`, :class:`Member`, :class:`Not`, :class:`And`, :class:`Or` and applied with pandas
boolean masks.  Nothing in it is ever evaluated as Python (no ``eval``, ``DataFrame.query`` or ``ast``): a
name is a column, a call or an attribute is a syntax error.

Grammar (pandas-query compatible for these forms; ``&``, ``|``, ``~`` are accepted for ``and``, ``or``,
``not`` so filters written for the former ``DataFrame.query`` still read)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" expr ")" | compare
    compare := operand OP operand (OP operand)*          # a chain a < b < c means a < b and b < c
             | operand ["not"] "in" "[" literal ("," literal)* "]"
    operand := COLUMN | literal
    literal := NUMBER | -NUMBER | 'text' | "text" | True | False
    COLUMN  := a name (letters, digits, _) or any text in `backticks`
    OP      := == != < <= > >=
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fit.errors import InputError

if TYPE_CHECKING:  # pandas only for the hints: fit.fitfile parses stored filters, and recommend stays light
    import pandas as pd

GRAMMAR = (
    "grammar: COLUMN OP VALUE with OP one of == != < <= > >=, or COLUMN [not] in [VALUE, ...], joined by "
    "and / or / not and parentheses; VALUE a number or 'quoted text'; a column name with dots or spaces "
    "in `backticks`"
)
MAX_DEPTH = 64  # nesting; deeper is refused as a syntax error rather than exhausting Python's stack
COMPARE_OPS: dict[str, Callable] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge,
}  # fmt: skip
KEYWORDS = {"and": "and", "or": "or", "not": "not", "in": "in", "&": "and", "|": "or", "~": "not"}
LITERAL_NAMES = {"True": True, "False": False}

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<quoted>`[^`]*`)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|<|>|[()\[\],&|~-])
    """,
    re.VERBOSE,
)


# ----------------------------------------------------------------------------- the tree
@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Literal:
    value: float | str | bool


Operand = Column | Literal


@dataclass(frozen=True)
class Compare:
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True)
class Member:
    column: Column
    values: tuple[float | str | bool, ...]
    negate: bool


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Compare | Member | Not | And | Or


# ----------------------------------------------------------------------------- tokenizer and parser
@dataclass(frozen=True)
class _Token:
    kind: str  # number | name | column (backquoted) | string | op | keyword | end
    text: str
    pos: int


def _tokens(text: str, label: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _syntax(label, text, pos, f"unexpected {text[pos]!r}" + _hint(text, pos))
        kind, value = match.lastgroup or "", match.group()
        if kind == "name" and value in KEYWORDS:
            kind = "keyword"
        elif kind == "quoted":
            kind, value = "column", value[1:-1]  # a backquoted name is always a column
        elif kind == "op" and value in KEYWORDS:
            kind, value = "keyword", KEYWORDS[value]
        if kind != "space":
            out.append(_Token(kind, value if kind != "keyword" else KEYWORDS[value], pos))
        pos = match.end()
    out.append(_Token("end", "", len(text)))
    return out


def _hint(text: str, pos: int) -> str:
    if text[pos] == ".":
        return " (attribute access is not allowed; a column name with dots goes in `backticks`)"
    if text[pos] == "=":
        return " (equality is ==)"
    return ""


def _syntax(label: str, text: str, pos: int, what: str) -> InputError:
    return InputError(f"{label} {text!r}: not a valid filter ({what} at character {pos + 1}); {GRAMMAR}")


class _Parser:
    def __init__(self, text: str, label: str) -> None:
        self.text, self.label = text, label
        self.tokens = _tokens(text, label)
        self.at = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, what: str, token: _Token | None = None) -> InputError:
        token = token or self.peek()
        found = "the end" if token.kind == "end" else repr(token.text)
        return _syntax(self.label, self.text, token.pos, f"{what}, found {found}")

    def expect(self, text: str) -> None:
        if self.peek().text != text or self.peek().kind not in ("op", "keyword"):
            raise self.fail(f"expected {text!r}")
        self.take()

    def parse(self) -> Node:
        node = self.expr()
        if self.peek().kind != "end":
            raise self.fail("expected and / or or the end")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH}")
        parts = [self.conjunction()]
        while self.peek().kind == "keyword" and self.peek().text == "or":
            self.take()
            parts.append(self.conjunction())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.negation()]
        while self.peek().kind == "keyword" and self.peek().text == "and":
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def negation(self) -> Node:
        token = self.peek()
        if token.kind == "keyword" and token.text == "not":
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"nested deeper than {MAX_DEPTH}")
            node = Not(self.negation())
            self.depth -= 1
            return node
        if token.kind == "op" and token.text == "(":
            self.take()
            node = self.expr()
            self.expect(")")
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token.kind == "keyword" and token.text in ("in", "not"):
            negate = token.text == "not"
            self.take()
            if negate:
                self.expect("in")
            if not isinstance(left, Column):
                raise self.fail("in needs a column on its left", token)
            return Member(left, self.literal_list(), negate)
        if token.text not in COMPARE_OPS or token.kind != "op":
            raise self.fail("expected a comparison (== != < <= > >= in)")
        pairs: list[Node] = []
        while self.peek().kind == "op" and self.peek().text in COMPARE_OPS:
            op = self.take().text
            right = self.operand()
            pairs.append(Compare(left, op, right))
            left = right
        return pairs[0] if len(pairs) == 1 else And(tuple(pairs))

    def operand(self) -> Operand:
        token = self.peek()
        if token.kind == "column" or (token.kind == "name" and token.text not in LITERAL_NAMES):
            self.take()
            following = self.peek()
            if following.kind == "op" and following.text in ("(", "["):
                raise self.fail("function calls and indexing are not allowed", following)
            return Column(token.text)
        return Literal(self.literal())

    def literal(self) -> float | str | bool:
        token = self.take()
        if token.kind == "op" and token.text == "-" and self.peek().kind == "number":
            return -float(self.take().text)
        if token.kind == "number":
            return float(token.text)
        if token.kind == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "name" and token.text in LITERAL_NAMES:
            return LITERAL_NAMES[token.text]
        raise self.fail("expected a column, a number or 'quoted text'", token)

    def literal_list(self) -> tuple[float | str | bool, ...]:
        opener = self.peek().text if self.peek().kind == "op" else ""
        if opener not in ("[", "("):
            raise self.fail("expected [ after in")
        self.take()
        closer = "]" if opener == "[" else ")"
        values = [self.literal()]
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            if self.peek().text == closer:  # a trailing comma, as in a Python tuple
                break
            values.append(self.literal())
        self.expect(closer)
        return tuple(values)


def parse_where(text: str, label: str = "--where") -> Node:
    """The tree of ``text``; a syntax error is one InputError line naming ``label`` and the grammar."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{label}: {text!r} is not a filter; {GRAMMAR}")
    return _Parser(text, label).parse()


# ----------------------------------------------------------------------------- applying
def columns_of(node: Node) -> list[str]:
    """Every column ``node`` names, in order of first use."""
    if isinstance(node, Compare):
        found = [o.name for o in (node.left, node.right) if isinstance(o, Column)]
    elif isinstance(node, Member):
        found = [node.column.name]
    elif isinstance(node, Not):
        found = columns_of(node.operand)
    else:
        found = [name for part in node.operands for name in columns_of(part)]
    return list(dict.fromkeys(found))


def mask_of(node: Node, frame: pd.DataFrame, text: str, label: str = "--where") -> np.ndarray:
    """The rows of ``frame`` that ``node`` keeps, as a boolean array; an unknown column or a comparison of
    text with a number by order is one InputError line."""
    missing = [name for name in columns_of(node) if name not in frame.columns]
    if missing:
        near = difflib.get_close_matches(missing[0], list(map(str, frame.columns)), n=1, cutoff=0.6)
        hint = f" (did you mean `{near[0]}`?)" if near else ""
        raise InputError(
            f"{label} {text!r}: unknown column {missing[0]!r}{hint}; columns: "
            f"{', '.join(map(str, frame.columns))}"
        )
    return np.asarray(_mask(node, frame, text, label), dtype=bool)


def _value(operand: Operand, frame: pd.DataFrame) -> pd.Series | float | str | bool:
    return frame[operand.name] if isinstance(operand, Column) else operand.value


def _mask(node: Node, frame: pd.DataFrame, text: str, label: str) -> np.ndarray:
    if isinstance(node, And):
        return np.logical_and.reduce([_mask(p, frame, text, label) for p in node.operands])
    if isinstance(node, Or):
        return np.logical_or.reduce([_mask(p, frame, text, label) for p in node.operands])
    if isinstance(node, Not):
        return ~_mask(node.operand, frame, text, label)
    if isinstance(node, Member):
        kept = frame[node.column.name].isin(list(node.values)).to_numpy(dtype=bool)
        return ~kept if node.negate else kept
    left, right = _value(node.left, frame), _value(node.right, frame)
    try:
        result = COMPARE_OPS[node.op](left, right)
    except TypeError:
        raise InputError(
            f"{label} {text!r}: cannot compare {_describe(node.left)} and {_describe(node.right)} with "
            f"{node.op} (text against a number?); {GRAMMAR}"
        ) from None
    if hasattr(result, "fillna"):  # a column's Series (a literal against a literal gives a bool)
        return result.fillna(False).to_numpy(dtype=bool)
    return np.full(len(frame), bool(result))


def _describe(operand: Operand) -> str:
    return f"column {operand.name!r}" if isinstance(operand, Column) else repr(operand.value)


def filter_rows(frame: pd.DataFrame, text: str, label: str = "--where") -> pd.DataFrame:
    """The rows of ``frame`` that the filter ``text`` keeps."""
    return frame.loc[mask_of(parse_where(text, label), frame, text, label)]
