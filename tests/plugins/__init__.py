"""Tests of the built-in feature plugins."""
