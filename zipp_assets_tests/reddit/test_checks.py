import pyarrow as pa
import pyarrow.parquet as pq

from zipp_assets.reddit.checks import check_quarantine_fraction, check_schema, check_unique


def test_schema_check_names_the_wrong_column(tmp_path):
    expected = pa.schema([("id", pa.string()), ("score", pa.int64())])
    good, bad, missing = tmp_path / "good.parquet", tmp_path / "bad.parquet", tmp_path / "missing.parquet"
    pq.write_table(pa.table({"id": ["a"], "score": [1]}, schema=expected), good)
    pq.write_table(pa.table({"id": ["a"], "score": ["1"]}), bad)
    pq.write_table(pa.table({"id": ["a"]}), missing)
    assert check_schema([good], expected).passed
    outcome = check_schema([good, bad, missing], expected)
    assert not outcome.passed
    assert "`score` is string, expected int64" in outcome.description
    assert "missing.parquet: columns ['id']" in outcome.description


def test_unique_check_counts_and_shows_duplicates(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"id": ["b", "c"]}), tmp_path / "2.parquet")
    outcome = check_unique([tmp_path / "1.parquet", tmp_path / "2.parquet"], ["id"])
    assert not outcome.passed and outcome.metadata["duplicate_rows"] == 1 and outcome.metadata["examples"] == "b"
    assert check_unique([tmp_path / "1.parquet"], ["id"]).passed


def test_quarantine_fraction_threshold():
    assert check_quarantine_fraction(10_000, 10, 0.001).passed
    failed = check_quarantine_fraction(10_000, 11, 0.001)
    assert not failed.passed and "11 of 10000" in failed.description
    assert check_quarantine_fraction(0, 0, 0.001).passed


def test_merging_per_partition_outcomes():
    from zipp_assets.reddit.checks import CheckOutcome, merge_by_partition

    merged = merge_by_partition({"2019-01": CheckOutcome(True, "ok", {"rows": 3}), "2019-02": CheckOutcome(False, "2 dup", {"rows": 4})})
    assert not merged.passed and merged.description == "2019-02: 2 dup"
    assert merged.metadata["rows"] == 7 and merged.metadata["partitions_failed"] == "2019-02"
    assert merge_by_partition({"a": CheckOutcome(True, "ok")}).passed
