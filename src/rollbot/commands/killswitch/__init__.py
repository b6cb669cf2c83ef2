"""The kill switch: what may trade, and the holds that stop it.

scope_names.py and trading_state.py (scopes, and ACTIVE / REDUCING / HALTED per scope),
gates.py and gates_agent.py (the live gates files, written here or by the agent on the trading
host), guard.py (the pre-trade guard a trading system asks before it sends), switch.py (the
kill switch: holds set and cleared), kill_scope.py (what an account or strategy kill reaches,
and how it is verified) and fast_hold.py (the terminal's kill, standard library only).

The bottom room, so a kill's path loads as little as possible: nothing here knows the app
context; the context (desk/) is built from these parts.

May import: no other room (storage, brokers and the standard library only).
"""
