"""Fixtures of the engine tests (defined in `reference_nets`)."""

from __future__ import annotations

from reference_nets import references

__all__ = ["references"]
