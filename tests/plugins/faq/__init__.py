"""Tests of the FAQ plugin."""
