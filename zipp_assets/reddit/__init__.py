"""Reddit dumps (Pushshift / Arctic Shift RC_/RS_YYYY-MM.zst) into monthly Parquet tables."""
