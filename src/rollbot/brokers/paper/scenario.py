"""Scenario files seed the paper venue: positions long and short, resting limit and stop orders,
a price path. Errors name the file, the line and the field."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rollbot.brokers.base import OrderType, Side
from rollbot.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioAccount(_Strict):
    cash: Decimal
    currency: str = "USD"


class ScenarioPosition(_Strict):
    symbol: str = Field(min_length=1)
    quantity: Decimal
    avg_price: Decimal = Field(gt=0)
    mark: Decimal | None = Field(None, gt=0)

    @field_validator("quantity")
    @classmethod
    def _nonzero(cls, quantity: Decimal) -> Decimal:  # a field check, so errors name the line
        if quantity == 0:
            raise ValueError("quantity must not be zero (long > 0, short < 0)")
        return quantity


class ScenarioOrder(_Strict):
    symbol: str = Field(min_length=1)
    side: Side
    type: Literal[OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT]
    quantity: Decimal = Field(gt=0)
    limit_price: Decimal | None = Field(None, gt=0)
    stop_price: Decimal | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _prices(self) -> ScenarioOrder:
        if self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and self.limit_price is None:
            raise ValueError(f"a {self.type.value} order needs limit_price")
        if self.type in (OrderType.STOP, OrderType.STOP_LIMIT) and self.stop_price is None:
            raise ValueError(f"a {self.type.value} order needs stop_price")
        return self


class Scenario(_Strict):
    name: str = "scenario"
    account: ScenarioAccount
    positions: list[ScenarioPosition] = Field(default_factory=list)
    orders: list[ScenarioOrder] = Field(default_factory=list)
    marks: dict[str, Decimal] = Field(default_factory=dict)
    price_path: list[dict[str, Decimal]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_symbols(self) -> Scenario:
        known = {p.symbol for p in self.positions} | set(self.marks)
        for i, order in enumerate(self.orders):
            if order.symbol not in known:
                raise ValueError(f"orders[{i}]: symbol {order.symbol!r} has no position or mark")
        return self

    def initial_marks(self) -> dict[str, Decimal]:
        marks = dict(self.marks)
        for p in self.positions:
            marks.setdefault(p.symbol, p.mark or p.avg_price)
        return marks


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Find the line of a pydantic error location in TOML source (array-of-tables aware)."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    i = 0
    while i < len(loc):
        key = loc[i]
        if not isinstance(key, str):
            i += 1
            continue
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(nxt, int):
            header = re.compile(rf"^\s*\[\[\s*{re.escape(key)}\s*\]\]")
            hits = [n for n in range(start, end) if header.match(lines[n])]
            if nxt < len(hits):
                start = hits[nxt]
                following = [n for n in range(start + 1, end) if lines[n].lstrip().startswith("[")]
                end = following[0] if following else end
                i += 2
                continue
        pattern = re.compile(rf"^\s*(\[\s*{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
        hits = [n for n in range(start, end) if pattern.match(lines[n])]
        if not hits:
            return start + 1 if start else None
        start = hits[0]
        i += 1
    return start + 1


def _syntax_error(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib says "Invalid value (at line 3, column 8)": add the table and key of that line."""
    found = re.search(r"at line (\d+), column (\d+)", str(exc))
    if not found:
        return str(exc)
    number = int(found.group(1))
    lines = text.splitlines()
    line = lines[number - 1] if 0 < number <= len(lines) else ""
    table = ""
    for above in reversed(lines[: number - 1]):
        header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", above)
        if header:
            table = header.group(1) + "."
            break
    key = re.match(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=", line)
    field = f"{table}{key.group(1)}" if key else table.rstrip(".") or "(top level)"
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
    return f"line {number}, {field}: {message}: {line.strip()!r}"


def _field(loc: tuple[Any, ...]) -> str:
    """positions[2].quantity (the 3rd [[positions]]), as a person counts tables."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    tables = [(loc[i - 1], p) for i, p in enumerate(loc) if isinstance(p, int) and i]
    if tables:
        name, index = tables[0]
        n = index + 1
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        out += f" (the {n}{suffix} [[{name}]])"
    return out or "(top level)"


def parse_scenario(text: str, origin: str) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario {origin} does not parse: {_syntax_error(text, exc)}") from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in ("function-after",))
            field = _field(loc)
            line = _line_of(text, loc)
            where = f"line {line}, " if line else ""
            problems.append(f"  {where}{field}: {err['msg']}")
        raise ConfigError(f"scenario {origin} is invalid:\n" + "\n".join(problems)) from None


def load_scenario(path: Path | None) -> Scenario:
    """A scenario file, or the packaged default book when `path` is None."""
    if path is None:
        text = resources.files("rollbot").joinpath("scenarios/default.toml").read_text("utf-8")
        return parse_scenario(text, "default")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"scenario {path} cannot be read: {exc}") from None
    return parse_scenario(text, str(path))
