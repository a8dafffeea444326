"""Rallypoint's pure domain core: events, rules, ledger, member and channel state.

Imports the standard library and msgspec only. Time is always an argument.
"""
