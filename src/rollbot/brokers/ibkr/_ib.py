"""The one place that imports the IB client library: ib_async, or ib_insync where only it exists.

Both expose the same API (ib_async is the maintained continuation of ib_insync).
"""

from __future__ import annotations

try:
    from ib_async import (
        IB,
        AccountValue,
        Contract,
        Fill,
        LimitOrder,
        MarketOrder,
        PortfolioItem,
        Trade,
    )
    from ib_async import Order as IbOrder
    from ib_async import Position as IbPosition
    from ib_async.util import UNSET_DOUBLE
except ImportError:  # pragma: no cover - only where ib_async is not installed
    from ib_insync import (  # type: ignore[no-redef]
        IB,
        AccountValue,
        Contract,
        Fill,
        LimitOrder,
        MarketOrder,
        PortfolioItem,
        Trade,
    )
    from ib_insync import Order as IbOrder  # type: ignore[no-redef]
    from ib_insync import Position as IbPosition  # type: ignore[no-redef]
    from ib_insync.util import UNSET_DOUBLE  # type: ignore[no-redef]

__all__ = [
    "IB",
    "UNSET_DOUBLE",
    "AccountValue",
    "Contract",
    "Fill",
    "IbOrder",
    "IbPosition",
    "LimitOrder",
    "MarketOrder",
    "PortfolioItem",
    "Trade",
]
