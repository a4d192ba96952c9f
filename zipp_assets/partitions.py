"""Partitions shared across stages."""

from __future__ import annotations

import dagster as dg

# Reddit's first dump month is 2005-06; the last partition is the last complete month.
FIRST_DUMP_MONTH = "2005-06"
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_DUMP_MONTH, fmt="%Y-%m", end_offset=0)
