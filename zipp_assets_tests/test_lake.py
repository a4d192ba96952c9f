from pathlib import Path

import pyarrow as pa
import pytest

from zipp_assets import lake


def _write(folder: Path, values: list[int]) -> None:
    lake.write_table(folder, pa.table({"x": values}))


def test_atomic_partition_replaces_and_never_duplicates(tmp_path):
    for values in ([1, 2, 3], [4, 5]):
        with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
            _write(folder, values)
    assert lake.read_table(tmp_path, "d")["x"].to_pylist() == [4, 5]
    leftovers = [p.name for p in (tmp_path / "d").iterdir()]
    assert leftovers == ["month=2019-01"]


def test_failure_inside_write_keeps_previous_partition(tmp_path):
    with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
        _write(folder, [1])
    with pytest.raises(RuntimeError):
        with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
            _write(folder, [9, 9, 9])
            raise RuntimeError("killed half way")
    assert lake.read_table(tmp_path, "d")["x"].to_pylist() == [1]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["month=2019-01"]


def test_temporaries_of_dead_writers_are_invisible_and_cleaned(tmp_path):
    with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
        _write(folder, [1])
    stale = tmp_path / "d" / ".tmp-month=2019-01.999999999.deadbeef"  # a pid that cannot be running
    stale.mkdir()
    _write(stale, [7, 7])
    assert lake.read_table(tmp_path, "d")["x"].to_pylist() == [1]  # readers skip hidden folders
    with lake.atomic_partition(tmp_path, "d", {"month": "2019-01"}) as folder:
        _write(folder, [2])
    assert not stale.exists()
    assert lake.read_table(tmp_path, "d")["x"].to_pylist() == [2]


@pytest.mark.parametrize("bad", ["../escape", "a/b", ".hidden", ""])
def test_partition_values_cannot_leave_the_lake(tmp_path, bad):
    with pytest.raises(ValueError):
        lake.partition_dir(tmp_path, "d", {"month": bad})


def test_rotating_writer_splits_files_and_writes_schema_when_empty(tmp_path):
    schema = pa.schema([("x", pa.int64())])
    (tmp_path / "a").mkdir()
    with lake.RotatingParquetWriter(tmp_path / "a", schema, rows_per_file=2) as w:
        w.write(pa.table({"x": [1, 2, 3, 4, 5]}))
    assert len(w.files) == 3 and w.rows_written == 5
    (tmp_path / "b").mkdir()
    with lake.RotatingParquetWriter(tmp_path / "b", schema) as empty:
        pass
    assert len(empty.files) == 1
    assert lake.read_table(tmp_path, "b").num_rows == 0


def test_reading_a_missing_dataset_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        lake.read_table(tmp_path, "nothing_here")


def test_duckdb_spills_into_the_system_temporary_folder_not_the_working_directory(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with lake.spilling_duckdb("64MB") as con:
        assert con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0] == str(tmp_path / "zipp-duckdb-spill")
        assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0].startswith("6")
