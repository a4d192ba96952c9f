"""ZIPP: zero-shot image personalization from personas, as Dagster software-defined assets."""

__version__ = "0.1.0"
