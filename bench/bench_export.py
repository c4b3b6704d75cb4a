"""Benchmark of seeding a sandbox from a Data Loader export (`sandbox.export_loader.load_export`).

Run: .venv/bin/python bench/bench_export.py [--preset medium] [--users 4000] [--seed 1] [--extra-columns]

1. Generates an org (`prepare_org`, as `persona-sync sandbox start` does) and times it: the generator's
   rows/s is the fair floor, the same kind of rows written into the same kind of SQLite store.
   `--users N` generates a preset of N persona users (medium is 2,000 users, ~525k rows; 4,000 users
   is ~1.05M rows).
2. Exports every object and every column to `<Object>.csv` as Data Loader writes them: every value in
   double quotes, CRLF line ends, booleans as true/false, empty for null. `--extra-columns` adds to
   Task copies of a few of its columns under custom names, so type inference runs as on a real org.
3. Times `load_export` on the export (target >= 100,000 rows/s), reading the CSVs in a helper process
   (the default for an export this large on a machine with a second CPU) and in the loading process.
4. Checks the last loaded org against the generated one: rows per object, and every column of a
   sample of rows (differences are printed; values the loader filled in are reported apart).

On a shared machine the numbers move with what else runs: compare runs made back to back.

Numbers go to stdout; nothing here asserts.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.export_loader import load_export  # noqa: E402
from sandbox.generate import PRESETS, Preset  # noqa: E402
from sandbox.runner import SandboxConfig, prepare_org  # noqa: E402
from sandbox.schema import SObjectSchema  # noqa: E402
from sandbox.store import OrgStore, quote  # noqa: E402

# Task columns copied under custom names by --extra-columns: one of each inferred type.
EXTRA_TASK_COLUMNS = {"Subject": "Topic__c", "WhoId": "Person__c", "IsClosed": "Done__c",
                      "CallDurationInSeconds": "Seconds__c", "CreatedDate": "Logged__c", "ActivityDate": "Due__c"}
SAMPLE_ROWS = 500


def export_org(store: OrgStore, export_dir: Path, extra_columns: bool) -> int:
    """Writes one Data Loader style CSV per object; returns the rows written."""
    export_dir.mkdir(parents=True, exist_ok=True)
    db = store.connection()
    total = 0
    for sobject in store.schema.values():
        names = sobject.field_names
        extras = EXTRA_TASK_COLUMNS if extra_columns and sobject.name == "Task" else {}
        formats = [_formatter(sobject, name) for name in names]
        cursor = db.execute(f"SELECT {', '.join(quote(n) for n in names)} FROM {quote(sobject.name)} ORDER BY rowid")
        copied = [names.index(source) for source in extras]
        with open(export_dir / f"{sobject.name}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
            writer.writerow([*names, *extras.values()])
            while rows := cursor.fetchmany(10_000):
                cells = [[fmt(value) for fmt, value in zip(formats, row)] for row in rows]
                if copied:
                    cells = [row + [row[index] for index in copied] for row in cells]
                writer.writerows(cells)
                total += len(rows)
    return total


def _formatter(sobject: SObjectSchema, name: str):
    kind = sobject.field(name).type
    if kind == "boolean":
        return lambda value: "" if value is None else ("true" if value else "false")
    if kind in ("double", "currency", "percent"):
        return lambda value: "" if value is None else repr(float(value))
    return lambda value: "" if value is None else str(value)


def compare_orgs(generated: Path, loaded: Path) -> None:
    """Prints rows per object that differ, and the columns of sampled rows that differ."""
    source, target = OrgStore.open(generated), OrgStore.open(loaded)
    mismatched_counts = {name: (source.count(name), target.count(name)) for name in source.schema
                         if source.count(name) != target.count(name)}
    print(f"rows per object: {'all equal' if not mismatched_counts else mismatched_counts}")
    differences: Counter[tuple[str, str, str]] = Counter()
    examples: dict[tuple[str, str, str], tuple] = {}
    checked = 0
    target_db = target.connection()
    for sobject in source.schema.values():
        rows = source.count(sobject.name)
        if not rows:
            continue
        names = sobject.field_names
        step = max(1, rows // SAMPLE_ROWS)
        select = f"SELECT {', '.join(quote(n) for n in names)} FROM {quote(sobject.name)}"
        for row in source.connection().execute(f"{select} WHERE rowid % {step} = 0"):
            expected = dict(zip(names, row))
            found = target_db.execute(f"{select} WHERE Id = ?", (expected["Id"],)).fetchone()
            checked += 1
            if found is None:
                differences[(sobject.name, "Id", "missing")] += 1
                continue
            for name, value in zip(names, found):
                if value != expected[name]:
                    kind = "filled" if expected[name] is None else "changed"
                    differences[(sobject.name, name, kind)] += 1
                    examples.setdefault((sobject.name, name, kind), (expected[name], value))
    print(f"sampled rows compared: {checked:,}, differing values: {sum(differences.values()):,}")
    for key, count in sorted(differences.items()):
        expected, found = examples[key]
        print(f"  {key[0]}.{key[1]} {key[2]} in {count} sampled rows, e.g. {expected!r} -> {found!r}")
    source.close()
    target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="medium", choices=sorted(PRESETS))
    parser.add_argument("--users", type=int, help="generate this many persona users instead of the preset's")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path(".persona-sync/bench-export"))
    parser.add_argument("--extra-columns", action="store_true", help="add custom columns to Task.csv")
    parser.add_argument("--modes", type=lambda text: [{"helper": True, "in-process": False}[mode]
                                                      for mode in text.split(",")],
                        default=[True, False], help="how to read: helper,in-process (default: both, in that order)")
    args = parser.parse_args()

    preset = args.preset
    if args.users:
        preset = f"users-{args.users}"
        PRESETS[preset] = Preset(preset, args.users, "benchmark size")  # this process only
    work = args.data_dir / f"{preset}-{args.seed}"
    if work.exists():
        shutil.rmtree(work)
    config = SandboxConfig(data_dir=work / "generated", preset=preset, seed=args.seed)

    started = time.perf_counter()
    store = prepare_org(config)
    generate_seconds = time.perf_counter() - started
    generated_rows = sum(store.count(name) for name in store.schema)
    print(f"generation ({preset}, seed {args.seed}): {generated_rows:,} rows in {generate_seconds:.1f} s = "
          f"{generated_rows / generate_seconds:,.0f} rows/s (the floor)")

    started = time.perf_counter()
    exported_rows = export_org(store, work / "export", args.extra_columns)
    store.close()
    size = sum(path.stat().st_size for path in (work / "export").iterdir())
    print(f"export: {exported_rows:,} rows, {size / 2**20:,.0f} MiB of CSV in {time.perf_counter() - started:.1f} s"
          + (" (Task with custom columns)" if args.extra_columns else ""))

    for helper_process in args.modes:
        loaded = work / f"loaded-{'helper' if helper_process else 'in-process'}" / "org.db"
        report = load_export(work / "export", loaded, helper_process=helper_process)
        rows = sum(report.rows_per_object.values())
        mode = "reading in a helper process" if helper_process else "reading in the loading process"
        print(f"load_export ({mode}): {rows:,} rows in {report.seconds:.1f} s = {rows / report.seconds:,.0f} rows/s "
              f"(target >= 100,000; floor {generated_rows / generate_seconds:,.0f})")
    if report.inferred_fields:
        inferred = {name: {f.name: f.type for f in fields} for name, fields in report.inferred_fields.items()}
        print(f"inferred fields: {inferred}")

    compare_orgs(config.org_path, loaded)


if __name__ == "__main__":
    main()
