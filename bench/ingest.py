"""Ingestion benchmark: the project's ingestion against the public dump scripts' approach, same run.

    .venv/bin/python bench/ingest.py                 # generates one month of >= 1M comment lines
    .venv/bin/python bench/ingest.py --dump RC_2019-01.zst   # or takes a real dump

(a) zipp_assets.reddit.ingest.ingest_file, run twice: in one process (decompression in a reader
    thread, msgspec typed decoding of only the needed fields, columnar Arrow building, streamed
    Parquet row groups) and with a process per CPU (blocks of lines dealt to worker processes).
(b) the reference: python-zstandard stream_reader with a 2 GiB window, split lines, json.loads per
    line, collect the same columns into Python lists, write Parquet with pyarrow.
Both outputs are compared row for row (sorted by id) before the figures are printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zipp_assets.reddit.ingest import available_cpus, ingest_file  # noqa: E402
from zipp_assets.reddit.schemas import COMMENTS_SCHEMA  # noqa: E402
from zipp_assets.simworld.world import WorldConfig, generate_world  # noqa: E402


def reference_ingest(path: Path, out_file: Path) -> int:
    """The widely used approach of the public dump scripts, producing the same columns."""
    reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(open(path, "rb"))
    text = io.TextIOWrapper(reader, encoding="utf-8", errors="replace")
    columns: dict[str, list] = {name: [] for name in COMMENTS_SCHEMA.names}
    for line in text:
        try:
            obj = json.loads(line)
            created = int(float(obj["created_utc"]))
            author = obj["author"]
            fullname = obj.get("author_fullname")
            row = {
                "id": obj["id"].removeprefix("t1_"),
                "link_id": obj.get("link_id"),
                "parent_id": obj.get("parent_id"),
                "subreddit": obj["subreddit"],
                "subreddit_id": obj.get("subreddit_id"),
                "author": author,
                "author_fullname": fullname,
                "user_key": (fullname or author) if author not in ("[deleted]", "[removed]", "") else None,
                "created_utc": created,
                "score": obj.get("score"),
                "edited": bool(obj.get("edited")),
                "distinguished": obj.get("distinguished"),
                "body": obj.get("body"),
            }
        except (ValueError, KeyError, TypeError):
            continue
        for name, value in row.items():
            columns[name].append(value)
    seconds = pa.array(columns["created_utc"], pa.int64()).cast(pa.timestamp("s", tz="UTC"))
    columns["created_utc"] = seconds.cast(COMMENTS_SCHEMA.field("created_utc").type)
    table = pa.table(columns, schema=COMMENTS_SCHEMA)
    pq.write_table(table, out_file, compression="zstd")
    return table.num_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump", type=Path, help="an RC_ dump to use instead of a generated one")
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--comments-per-user", type=float, default=52.0)
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=0, help="processes of the second project run (default: one per CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every run; the best of each counts")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zipp-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    dump = args.dump
    if dump is None:
        dump = workdir / "raw" / "reddit" / "RC_2019-01.zst"
        if not dump.exists():
            print(f"generating one month with {args.users} users into {dump.parent} ...", flush=True)
            config = WorldConfig(
                users=args.users,
                months=("2019-01",),
                comments_per_user_month=args.comments_per_user,
                submissions_per_user_month=0.2,
                malformed_rate=0.0,
                write_images=False,
            )
            generate_world(config, workdir / "raw", None, progress=print)
    print(f"dump: {dump} ({dump.stat().st_size / 1e6:.1f} MB compressed)", flush=True)

    processes = args.workers or available_cpus()
    modes = {"one process": 1, f"{processes} processes": processes}
    reference_file = workdir / "reference.parquet"
    seconds: dict[str, list[float]] = {name: [] for name in [*modes, "reference"]}
    reports = {}
    # Rounds interleave the runs, so a slower stretch of the machine falls on all of them alike.
    for round_number in range(args.rounds):
        for name, workers in modes.items():
            out, quarantine = workdir / f"project-{workers}", workdir / f"project-{workers}-quarantine"
            for folder in (out, quarantine):
                folder.mkdir(exist_ok=True)
                for stale in folder.glob("*.parquet"):
                    stale.unlink()
            t0 = time.perf_counter()
            reports[name] = ingest_file(dump, "comments", out, quarantine, workers=workers,
                                        progress=print if round_number == 0 else (lambda _m: None))
            seconds[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference_rows = reference_ingest(dump, reference_file)
        seconds["reference"].append(time.perf_counter() - t0)
        print(f"round {round_number + 1}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()), flush=True)

    theirs = pq.read_table(reference_file).sort_by("id")
    identical = {}
    for name, workers in modes.items():
        ours = pq.read_table(workdir / f"project-{workers}").sort_by("id")
        identical[name] = ours.num_rows == theirs.num_rows and ours.equals(theirs)
    lines = reports["one process"].lines_in
    best = {name: min(values) for name, values in seconds.items()}
    print()
    print(f"lines in dump: {lines:,} ({reports['one process'].quarantined} quarantined); best of {args.rounds} rounds")
    for name, value in best.items():
        ratio = best["reference"] / value
        print(f"{name:>13} {value:8.2f} s  {lines / value:12,.0f} lines/s  ratio {ratio:.2f}x  (rounds: "
              + ", ".join(f"{best['reference'] / v if name != 'reference' else 1:.2f}x" for v in seconds[name]) + ")")
    print(f"identical output rows: {identical} (reference rows {reference_rows:,})")
    worker_peak = max(r.worker_peak_rss for r in reports.values())
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak resident memory: largest parse worker {worker_peak / 2**20:,.0f} MiB; this process "
          f"{own_peak / 2**20:,.0f} MiB (it also ran the reference, which holds every row in Python lists)")
    if args.out:
        args.out.write_text(json.dumps({
            "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "lines": lines,
            "compressed_bytes": dump.stat().st_size, "cpus": available_cpus(), "load_average": os.getloadavg(),
            "seconds": seconds, "best_ratio": {n: best["reference"] / v for n, v in best.items()},
            "identical": identical, "worker_peak_rss": worker_peak, "process_peak_rss": own_peak,
        }, indent=1) + "\n")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
