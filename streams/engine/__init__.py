"""The batch engine under the Faust app: merge, state, restore, transactions (see engine.py)."""
