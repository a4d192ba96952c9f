"""Fixtures of the encoder tests live in the root conftest (the personas tests share them)."""
