"""Test suite. A regular package so `tests.fixtures` wins over the `tests` package pynq 3.0.1 installs."""
