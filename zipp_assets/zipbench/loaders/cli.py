"""`python -m zipp_assets.zipbench.loaders`: check a benchmark file or folder before a backfill.

  inspect PATH [--format NAME] [--json] [--examples N]
      what PATH is (file or folder, container, format and whether it was named or detected), how many
      rows load into which table, how many are rejected (counts per field and reason, with a few
      examples naming file and row), skipped and duplicated, the loader's notes, and per file.
  formats
      the formats, their tables, the columns that name them and where each layout is published.
  export-images PATH OUT
      write the image bytes a Parquet file carries (Pick-a-Pic's jpg_0/jpg_1, Rapidata's image1/image2)
      into OUT, named as the ZIPBench judge looks them up (`preference_image_root`).

Exit status: 0 when rows loaded, 1 when the path cannot be read or nothing loaded, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from zipp_assets.zipbench.loaders import FORMATS, TABLE_TITLES, BenchmarkFileError, describe, load

EXAMPLE_RAW = 200  # characters of a rejected row shown in an example


def inspect_report(path: str | Path, format: str | None = None, examples: int = 3) -> dict:
    """The inspection of a file or folder as a JSON-able dict; {'path', 'error'} when it cannot be read."""
    path = Path(path)
    try:
        result = load(path, format, on_bad_row="skip")
    except BenchmarkFileError as error:
        return {"path": str(path), "error": str(error), "rows_loaded": 0}
    word = {f["file"]: f["row_word"] for f in result.files}
    by_reason: dict[tuple, list[dict]] = defaultdict(list)
    for row in result.rejected.to_pylist():
        by_reason[(row["field"], row["kind"])].append(row)
    rejected = [{"field": field, "kind": kind, "count": len(rows),
                 "examples": [{"file": r["source_file"], "row": r["source_row"],
                               "row_word": word.get(r["source_file"], "row"), "reason": r["reason"],
                               "raw": r["raw"][:EXAMPLE_RAW]} for r in rows[:examples]]}
                for (field, kind), rows in sorted(by_reason.items(), key=lambda item: -len(item[1]))]
    skipped_by: dict[str, list[dict]] = defaultdict(list)
    for row in result.skipped.to_pylist():
        skipped_by[row["reason"]].append(row)
    skipped = [{"reason": reason, "count": len(rows),
                "examples": [{"file": r["source_file"], "row": r["source_row"],
                              "row_word": word.get(r["source_file"], "row")} for r in rows[:examples]]}
               for reason, rows in sorted(skipped_by.items(), key=lambda item: -len(item[1]))]
    duplicates = result.duplicates.to_pylist()
    return {
        "path": str(path),
        "is_folder": path.is_dir(),
        "format": result.format.name,
        "format_title": result.format.title,
        "format_source": result.format.source,
        "format_by": "detected from the columns" if result.detected else "named",
        "table": result.kind,
        "table_title": TABLE_TITLES[result.kind],
        "records_read": result.records,
        "rows_loaded": result.table.num_rows,
        "rejected_total": result.rejected.num_rows,
        "rejected": rejected,
        "skipped_total": result.skipped.num_rows,
        "skipped": skipped,
        "duplicates_total": len(duplicates),
        "duplicates": [{"file": d["source_file"], "row": d["source_row"], "key": d["key"],
                        "row_word": word.get(d["source_file"], "row"),
                        "first": f"{d['first_file']}:{d['first_row']}"} for d in duplicates[:examples]],
        "notes": [{"note": note, "count": count} for note, count in result.notes.items()],
        "summary": describe(result),
        "files": result.files,
        "not_data_files": result.not_data,
    }


def render_text(report: dict, files_shown: int = 20) -> str:
    if "error" in report:
        return f"{report['path']}: cannot be read as a benchmark file\n  {report['error']}"
    files = report["files"]
    read = [f for f in files if f["status"] == "read"]
    what = (f"a folder of {len(files)} data file(s)" if report["is_folder"] else f"a {read[0]['container']} file")
    lines = [f"{report['path']}: {what}",
             f"  format: {report['format']} ({report['format_by']}): {report['format_title']}",
             f"  layout published at: {report['format_source']}",
             f"  table: {report['table_title']}",
             f"  records read: {report['records_read']}; loaded: {report['rows_loaded']} row(s); "
             f"rejected: {report['rejected_total']}; skipped: {report['skipped_total']}; "
             f"duplicates: {report['duplicates_total']}",
             "  holds: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["summary"].items())]
    if report["rejected"]:
        lines.append("  rejected, by field and reason:")
        for group in report["rejected"]:
            lines.append(f"    {group['count']:>6}  {group['field'] or '(row)'}: {group['kind']}")
            for example in group["examples"]:
                where = f"{example['file']} {example['row_word']} {example['row']}"
                lines.append(f"            e.g. {where}: {example['reason']}")
    if report["skipped"]:
        lines.append("  skipped (valid, but nothing the benchmark can use):")
        for group in report["skipped"]:
            where = ", ".join(f"{e['file']} {e['row_word']} {e['row']}" for e in group["examples"])
            lines.append(f"    {group['count']:>6}  {group['reason']}  (e.g. {where})")
    if report["duplicates"]:
        lines.append("  duplicates (kept once, the first):")
        for d in report["duplicates"]:
            lines.append(f"            {d['file']} {d['row_word']} {d['row']} repeats {d['first']} ({d['key']})")
    if report["notes"]:
        lines.append("  notes:")
        for note in report["notes"]:
            lines.append(f"    {note['count']:>6}  {note['note']}")
    if report["is_folder"]:
        lines.append(f"  files ({len(read)} read, {len(files) - len(read)} refused):")
        shown = sorted(files, key=lambda f: (f["status"] == "read", f["file"]))[:files_shown]
        for f in shown:
            if f["status"] == "read":
                lines.append(f"    {f['file']}: {f['container']}, {f['records']} record(s), {f['rows']} loaded, "
                             f"{f['rejected']} rejected")
            else:
                lines.append(f"    {f['file']}: refused: {f['problem']}")
        if len(files) > files_shown:
            lines.append(f"    ... and {len(files) - files_shown} more")
        if report["not_data_files"]:
            lines.append("  not data (skipped): " + ", ".join(report["not_data_files"][:10]))
    return "\n".join(lines)


def formats_text() -> str:
    lines = []
    for f in FORMATS.values():
        needs = ", ".join(f.required) + (f" and one of {'/'.join(f.any_of)}" if f.any_of else "")
        lines += [f"{f.name}: {f.title}", f"  table: {TABLE_TITLES[f.table]}", f"  detected by: {needs}",
                  f"  layout: {f.source}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.zipbench.loaders",
                                     description="Check benchmark files (ZIP-Bench, Civitai records, PIP, "
                                                 "Pick-a-Pic v2, Rapidata) before a backfill.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="what a file or folder is and how it loads")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--format", choices=list(FORMATS), help="read as this format instead of detecting it")
    inspect.add_argument("--json", action="store_true", help="the report as JSON")
    inspect.add_argument("--examples", type=int, default=3, help="examples per reason (default 3)")
    commands.add_parser("formats", help="the formats and how each is detected")
    export = commands.add_parser("export-images", help="write the image bytes of Parquet files into a folder")
    export.add_argument("path", type=Path)
    export.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "formats":
        print(formats_text())
        return 0
    if args.command == "export-images":
        from zipp_assets.zipbench.loaders.images import export_images

        try:
            counts = export_images(args.path, args.out)
        except BenchmarkFileError as error:
            print(error, file=sys.stderr)
            return 1
        print(json.dumps(counts))
        return 0
    report = inspect_report(args.path, args.format, max(0, args.examples))
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    return 0 if report.get("rows_loaded") else 1
