"""Memory and time of committing scratch Parquet files to the lake: the project's reader against the
one it replaced, same run, at growing sizes.

    .venv/bin/python bench/lake_commit.py                       # 1M, 2M and 4M rows of embeddings
    .venv/bin/python bench/lake_commit.py --rows 500K,1M --repeat 2

Every lake write goes through scratch files (`lake.atomic_partition` / `lake.build`) that
`write_deltalake` reads back. The rows here are `user_embeddings` rows (an index, a pseudonym-like
id and 128 float32s), written by `RotatingParquetWriter` in groups of 32,768 as inference writes
them. For each size, in fresh subprocesses (so each peak is its own):

  reader     iterate the scratch reader alone
  commit     the reader handed to `write_deltalake`, as `lake` commits

(a) `zipp_assets.lake._scratch_reader`: a row group at a time, no pre-buffering;
(b) the reference: the reader before it, `ParquetFile(path).iter_batches(batch_size=256_000)`.
Peak RSS above the subprocess's level before the step, sampled by the kernel's high-water mark;
seconds of the step. Both commits' tables are compared (row count and a checksum of the indexes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import peak_bytes, release_free_memory, reset_peak, rss_bytes  # noqa: E402


def reference_reader(files: list[Path]) -> pa.RecordBatchReader:
    """The scratch reader as it was before (no partition columns here: the whole table)."""
    schema = pq.read_schema(files[0])

    def batches() -> Iterator[pa.RecordBatch]:
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=256_000):
                yield from pa.Table.from_batches([batch]).select(schema.names).cast(schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def write_scratch(folder: Path, rows: int) -> list[Path]:
    from zipp_assets.encoder.inference import _embeddings_schema, _vectors
    from zipp_assets.staging import RotatingParquetWriter

    schema = _embeddings_schema(128, None)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    with RotatingParquetWriter(folder, schema) as writer:
        for start in range(0, rows, 32_768):
            index = np.arange(start, min(start + 32_768, rows))
            writer.write(pa.table({"user_index": pa.array(index, pa.int64()),
                                   "user_id": pa.array([f"t2_{i:09d}" for i in index]),
                                   "embedding": _vectors(rng.standard_normal((len(index), 128), dtype=np.float32))},
                                  schema=schema))
    return writer.files


def measure(files: list[Path], which: str, step: str, table_dir: Path) -> dict:
    """In this process: one step with one reader; peak above the level before it."""
    from deltalake import DeltaTable, write_deltalake

    from zipp_assets.lake import _scratch_reader

    release_free_memory()
    reset_peak()
    before = rss_bytes()
    started = time.perf_counter()
    reader = _scratch_reader(files, {}) if which == "project" else reference_reader(files)
    result: dict = {}
    if step == "reader":
        result["rows"] = sum(batch.num_rows for batch in reader)
    else:
        write_deltalake(str(table_dir), reader, mode="overwrite")
    seconds = time.perf_counter() - started
    rise = peak_bytes() - before
    if step == "commit":
        # one thread: a threaded scan of delta-rs's dataset can abort the process at exit (see lake.read)
        dataset = DeltaTable(str(table_dir)).to_pyarrow_dataset()
        index = dataset.to_table(columns=["user_index"], use_threads=False)["user_index"].to_numpy()
        result |= {"rows": len(index), "index_sum": int(index.sum())}
    return result | {"seconds": seconds, "peak_above_start_gib": rise / 2**30}


def parse_rows(text: str) -> int:
    units = {"K": 10**3, "M": 10**6}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1M,2M,4M")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--measure", nargs=4, metavar=("FILES_JSON", "WHICH", "STEP", "TABLE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        files_json, which, step, table_dir = args.measure
        print(json.dumps(measure([Path(p) for p in json.loads(files_json)], which, step, Path(table_dir))), flush=True)
        os._exit(0)  # the figures are out; delta-rs's writer threads can abort an ordinary interpreter exit
    report = []
    for size in args.rows.split(","):
        rows = parse_rows(size)
        with tempfile.TemporaryDirectory() as work:
            files = write_scratch(Path(work) / "scratch", rows)
            data_gib = sum(f.stat().st_size for f in files) / 2**30
            figures: dict = {}
            for round_number in range(args.repeat):
                for step in ("reader", "commit"):
                    for which in ("reference", "project") if round_number % 2 == 0 else ("project", "reference"):
                        table_dir = Path(work) / f"table-{which}-{round_number}"
                        done = subprocess.run([sys.executable, __file__, "--measure", json.dumps([str(f) for f in files]),
                                               which, step, str(table_dir)], capture_output=True, text=True, check=True)
                        figures.setdefault(f"{step} {which}", []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            commits = {which: figures[f"commit {which}"][0] for which in ("project", "reference")}
            if commits["project"]["rows"] != rows or commits["project"]["index_sum"] != commits["reference"]["index_sum"]:
                raise SystemExit(f"the two commits differ at {size}: {commits}")
        row = {"rows": rows, "scratch_files": len(files), "scratch_gib": round(data_gib, 3)}
        for key, runs in figures.items():
            row[key] = {"seconds": min(r["seconds"] for r in runs),
                        "peak_above_start_gib": max(r["peak_above_start_gib"] for r in runs)}
        for step in ("reader", "commit"):
            project, reference = row[f"{step} project"], row[f"{step} reference"]
            print(f"{size:>5} rows ({len(files)} file(s), {data_gib:.2f} GiB)  {step:6}  "
                  f"peak above start: {reference['peak_above_start_gib']:.2f} -> {project['peak_above_start_gib']:.2f} GiB  "
                  f"seconds: {reference['seconds']:.1f} -> {project['seconds']:.1f} "
                  f"({reference['seconds'] / project['seconds']:.2f}x)", flush=True)
        report.append(row)
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "sizes": report}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
