import pyarrow as pa

from zipp_assets.reddit.checks import check_quarantine_fraction, check_schema, check_unique


def test_schema_check_names_the_wrong_column():
    expected = pa.schema([("id", pa.string()), ("score", pa.int64())])
    assert check_schema(expected, expected).passed
    assert check_schema(expected.append(pa.field("month", pa.string())), expected, partition_columns=["month"]).passed
    wrong_type = check_schema(pa.schema([("id", pa.string()), ("score", pa.string())]), expected, "reddit_comments")
    assert not wrong_type.passed and "reddit_comments: `score` is string, expected int64" in wrong_type.description
    missing = check_schema(pa.schema([("id", pa.string())]), expected, "reddit_comments")
    assert not missing.passed and "reddit_comments: columns ['id']" in missing.description
    extra = check_schema(expected.append(pa.field("month", pa.string())), expected)  # not a partition column
    assert not extra.passed


def test_unique_check_counts_and_shows_duplicates():
    outcome = check_unique(pa.table({"id": ["a", "b", "b", "c"]}), ["id"])
    assert not outcome.passed and outcome.metadata["duplicate_rows"] == 1 and outcome.metadata["examples"] == "b"
    assert check_unique(pa.table({"id": ["a", "b"]}), ["id"]).passed
    assert check_unique(pa.table({"id": pa.array([], pa.string())}), ["id"]).passed


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


def test_quarantine_by_month_fails_a_bad_month_that_a_sum_would_hide():
    from zipp_assets.reddit.checks import check_quarantine_by_month

    counts = {"2019-01": (1000, 30), "2019-02": (9000, 10)}  # 4 per mille over both months; 3% in January
    assert check_quarantine_fraction(10_000, 40, 0.01).passed
    outcome = check_quarantine_by_month(counts, 0.01)
    assert not outcome.passed and outcome.metadata["months_over_limit"] == "2019-01"
    assert outcome.description.startswith("2019-01: 30 of 1000 lines") and "2019-02" not in outcome.description
    assert (outcome.metadata["lines_in"], outcome.metadata["quarantined"]) == (10_000, 40)
    passed = check_quarantine_by_month({"2019-02": (9000, 10)}, 0.01)
    assert passed.passed and "every month under the limit (highest 2019-02" in passed.description
    assert check_quarantine_by_month({}, 0.01).passed
