"""A safe calculator tool: arithmetic written with digits, symbols or Chinese words.

"3+5*2", "（12.5 - 2）÷ 3", "100乘以1.5等于多少", "2的10次方是多少". Parsed by a small
recursive-descent parser over exact fractions: no ``eval``, no names, no attribute access,
bounded input length, exponents and result size, so no expression can run code or take the
replica down.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

MAX_EXPRESSION_CHARS = 120
MAX_EXPONENT = 64
MAX_DIGITS = 60  # a result larger than this many digits is refused, not printed

_WORDS = (  # longest first: "乘以" before "乘"
    ("的平方", "^2"), ("的立方", "^3"), ("次方", ""), ("的", "^"),
    ("加上", "+"), ("减去", "-"), ("乘以", "*"), ("除以", "/"),
    ("加", "+"), ("减", "-"), ("乘", "*"), ("除", "/"),
    ("×", "*"), ("x", "*"), ("÷", "/"), ("**", "^"),
)
_ASKING = re.compile(r"(等于多少|等于几|是多少|得多少|等于|是几|=\??|\?|？|。|!|！|帮我算一下|帮我算|算一下|计算一下|计算|请问)")
_ALLOWED = re.compile(r"^[0-9.+\-*/%^() ]+$")
_HAS_OPERATION = re.compile(r"\d\s*[+\-*/%^]\s*[(\-]*\d|\)\s*[+\-*/%^]|\d\s*\^")


class CalculationError(ValueError):
    """The expression cannot be computed (division by zero, too large): said to the user."""


class Calculator:
    name = "calculator"
    intents = ("calculate",)

    def parse(self, text: str) -> Mapping[str, Any] | None:
        expression = _expression(text)
        return None if expression is None else {"intent": "calculate", "expression": expression}

    def run(self, arguments: Mapping[str, Any]) -> str:
        expression = str(arguments["expression"])
        try:
            value = _Parser(expression).parse()
        except CalculationError as exc:
            return f"这个算式没法计算：{exc}。"
        return f"{expression} = {format_number(value)}"


def _expression(text: str) -> str | None:
    folded = unicodedata.normalize("NFKC", text).strip().lower()
    if len(folded) > MAX_EXPRESSION_CHARS:
        return None
    asked = bool(_ASKING.search(folded))
    folded = _ASKING.sub("", folded)
    written = folded
    for word, symbol in _WORDS:
        folded = folded.replace(word, symbol)
    worded = folded != written
    folded = folded.replace("（", "(").replace("）", ")")
    folded = " ".join(folded.split())
    if not folded or not _ALLOWED.match(folded) or not _HAS_OPERATION.search(folded):
        return None
    # "400-820-6688" and "2024-01-15" or "1/15" are a phone number and dates, not sums: with
    # only - and /, the user must ask ("等于多少", "=") for it to be a calculation.
    if not (asked or worded or set(folded) & set("+*%^")):
        return None
    return folded


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    text = f"{decimal:.10f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == value else f"≈{text}"


class _Parser:
    """expression := term (('+'|'-') term)* ; term := power (('*'|'/'|'%') power)* ;
    power := unary ('^' power)? ; unary := '-' unary | atom ; atom := number | '(' expression ')'"""

    def __init__(self, text: str):
        self._tokens = re.findall(r"\d+(?:\.\d+)?|\.\d+|[+\-*/%^()]", text)
        if "".join(self._tokens) != text.replace(" ", ""):
            raise CalculationError("算式里有看不懂的部分")
        self._at = 0

    def parse(self) -> Fraction:
        value = self._expression()
        if self._at != len(self._tokens):
            raise CalculationError("算式不完整")
        return value

    def _peek(self) -> str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise CalculationError("算式不完整")
        self._at += 1
        return token

    def _expression(self) -> Fraction:
        value = self._term()
        while self._peek() in ("+", "-"):
            value = value + self._term() if self._take() == "+" else value - self._term()
            _check_size(value)
        return value

    def _term(self) -> Fraction:
        value = self._power()
        while self._peek() in ("*", "/", "%"):
            operator, right = self._take(), self._power()
            if operator != "*" and right == 0:
                raise CalculationError("除数不能为 0")
            value = value * right if operator == "*" else value / right if operator == "/" else value % right
            _check_size(value)
        return value

    def _power(self) -> Fraction:
        base = self._unary()
        if self._peek() != "^":
            return base
        self._take()
        exponent = self._power()
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
            raise CalculationError(f"只支持不超过 {MAX_EXPONENT} 的整数次方")
        if base == 0 and exponent < 0:
            raise CalculationError("0 不能取负数次方")
        value = base ** int(exponent)
        _check_size(value)
        return value

    def _unary(self) -> Fraction:
        if self._peek() == "-":
            self._take()
            return -self._unary()
        if self._peek() == "+":
            self._take()
            return self._unary()
        return self._atom()

    def _atom(self) -> Fraction:
        token = self._take()
        if token == "(":
            value = self._expression()
            if self._take() != ")":
                raise CalculationError("括号不配对")
            return value
        if token in "+-*/%^)":
            raise CalculationError("算式不完整")
        return Fraction(token)


def _check_size(value: Fraction) -> None:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise CalculationError("结果太大了")
