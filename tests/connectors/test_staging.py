"""Staging: upserts by Id, tombstones, schema evolution, durability, compaction under crashes, full refresh."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import connectors.staging.files as staging_files
import connectors.staging.layout as staging_layout
import connectors.staging.store as staging_store
from connectors.staging import Prune, Staging, StagingError

T0 = datetime(2026, 10, 1, tzinfo=UTC)
STAMP = pa.timestamp("ms", tz="UTC")


class SimulatedCrash(Exception):
    """Stands for the process dying at this point."""


def rows(ids: list[str], values: list[Any], *, stamps: list[datetime] | None = None) -> pa.Table:
    """A Task-like page: Id, Subject, SystemModstamp."""
    stamps = stamps or [T0 + timedelta(minutes=n) for n in range(len(ids))]
    return pa.table({"Id": pa.array(ids, pa.string()), "Subject": pa.array(values),
                     "SystemModstamp": pa.array(stamps, STAMP)})


def state(staging: Staging, sobject: str = "Task") -> dict[str, Any]:
    """Id -> Subject, as read."""
    frame = staging.read(sobject, ["Id", "Subject"])
    return dict(zip(frame["Id"], frame["Subject"]))


def file_names(staging: Staging, sobject: str = "Task") -> list[str]:
    return sorted(path.name for path in (staging.root / sobject).iterdir())


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return Staging(tmp_path / "staging")


def crash_on(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, *, after_calls: int = 0) -> None:
    """Lets `owner.name` succeed `after_calls` times, then makes it raise SimulatedCrash."""
    original: Callable[..., Any] = getattr(owner, name)
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise SimulatedCrash(f"crash in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


# --- upserts and tombstones -----------------------------------------------------------------------------

def test_a_later_part_wins_and_within_a_part_the_later_row_wins(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "b", "a"], ["a1", "b1", "a2"]))
    staging.write_part("Task", rows(["b", "c"], ["b2", "c1"]))
    assert state(staging) == {"a": "a2", "b": "b2", "c": "c1"}


def test_read_is_sorted_by_id_with_the_staged_columns_only(staging: Staging) -> None:
    staging.write_part("Task", rows(["c", "a", "b"], ["c", "a", "b"]))
    frame = staging.read("Task")
    assert list(frame.columns) == ["Id", "Subject", "SystemModstamp"]
    assert list(frame["Id"]) == ["a", "b", "c"]
    assert str(frame["SystemModstamp"].dtype) == "datetime64[ms, UTC]"
    assert staging.read_arrow("Task").schema.field("SystemModstamp").type == STAMP


def test_a_tombstone_removes_earlier_rows_and_a_later_part_brings_the_record_back(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "b"], ["a1", "b1"]))
    staging.write_tombstones("Task", ["a", "never-staged"], [T0 + timedelta(hours=1)] * 2)
    assert state(staging) == {"b": "b1"}
    assert staging.row_count("Task") == 1

    staging.write_part("Task", rows(["a"], ["a-undeleted"], stamps=[T0 + timedelta(hours=2)]))
    assert state(staging) == {"a": "a-undeleted", "b": "b1"}


def test_a_tombstone_removes_only_rows_of_earlier_files(staging: Staging) -> None:
    staging.write_tombstones("Task", ["a"], [T0])
    staging.write_part("Task", rows(["a"], ["a-after"]))
    assert state(staging) == {"a": "a-after"}


def test_tombstones_need_one_aware_deleted_at_per_id(staging: Staging) -> None:
    assert staging.write_tombstones("Task", [], []) is None
    with pytest.raises(StagingError, match="2 ids but 1 deleted_at"):
        staging.write_tombstones("Task", ["a", "b"], [T0])
    with pytest.raises(StagingError, match="naive datetime"):
        staging.write_tombstones("Task", ["a"], [datetime(2026, 10, 1)])


def test_sequence_numbers_grow_across_parts_tombstones_and_bases(staging: Staging) -> None:
    staging.write_part("Task", rows(["a"], ["a1"]))
    staging.write_tombstones("Task", ["a"], [T0])
    staging.compact("Task")
    staging.write_part("Task", rows(["b"], ["b1"]))
    assert file_names(staging) == ["base-000000000003.parquet", "part-000000000004.parquet"]


# --- columns, types and schema evolution ----------------------------------------------------------------

def test_columns_are_read_in_the_asked_order_and_unknown_ones_are_null(staging: Staging) -> None:
    staging.write_part("Task", rows(["a"], ["a1"]))
    frame = staging.read("Task", ["Subject", "Id", "CallType"])
    assert list(frame.columns) == ["Subject", "Id", "CallType"]
    assert frame.iloc[0].tolist() == ["a1", "a", None]
    assert staging.read("Task", ["Subject"])["Subject"].tolist() == ["a1"]


def test_a_field_added_later_reads_as_null_for_older_rows_and_types_widen(staging: Staging) -> None:
    staging.write_part("Task", pa.table({"Id": ["a", "b"], "Duration": pa.array([1, 2], pa.int32())}))
    staging.write_part("Task", pa.table({"Id": ["b", "c"], "Duration": pa.array([20, 30], pa.int64()),
                                         "CallType": ["Inbound", None]}))
    table = staging.read_arrow("Task")
    assert table.schema.field("Duration").type == pa.int64()
    assert table.to_pylist() == [{"Id": "a", "Duration": 1, "CallType": None},
                                 {"Id": "b", "Duration": 20, "CallType": "Inbound"},
                                 {"Id": "c", "Duration": 30, "CallType": None}]


def test_parts_that_disagree_on_a_type_are_reported(staging: Staging) -> None:
    staging.write_part("Task", pa.table({"Id": ["a"], "Duration": [1]}))
    staging.write_part("Task", pa.table({"Id": ["b"], "Duration": ["long"]}))
    with pytest.raises(StagingError, match="Task disagree on a column's type"):
        staging.read("Task")


def test_timestamps_are_stored_as_milliseconds_in_utc(staging: Staging) -> None:
    in_cet = pa.array([datetime(2026, 10, 1, 2, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))],
                      pa.timestamp("us", tz="+02:00"))
    staging.write_part("Task", pa.table({"Id": ["a"], "SystemModstamp": in_cet}))
    value = staging.read_arrow("Task")["SystemModstamp"]
    assert value.type == STAMP
    assert value[0].as_py() == datetime(2026, 10, 1, 0, 0, 0, 123000, tzinfo=UTC)


def test_dictionary_columns_are_stored_decoded(staging: Staging) -> None:
    status = pa.array(["Open", "Closed"]).dictionary_encode()
    staging.write_part("Task", pa.table({"Id": ["a", "b"], "Status": status}))
    staging.write_part("Task", pa.table({"Id": ["c"], "Status": ["Open"]}))
    assert staging.read_arrow("Task")["Status"].type == pa.string()


@pytest.mark.parametrize(("table", "message"), [
    (pa.table({"Subject": ["x"]}), "has no Id column"),
    (pa.table({"Id": ["a", None]}), "1 rows of Task have no Id"),
    (pa.table({"Id": ["a", ""]}), "1 rows of Task have no Id"),
    (pa.table({"Id": [1]}), "Id column of Task is int64"),
    (pa.table({"Id": ["a"], "__index_level_0__": [0]}), "preserve_index=False"),
    (pa.table({"Id": ["a"], "When": pa.array([datetime(2026, 1, 1)], pa.timestamp("ms"))}), "without a time zone"),
])
def test_parts_staging_cannot_hold_are_refused(staging: Staging, table: pa.Table, message: str) -> None:
    with pytest.raises(StagingError, match=message):
        staging.write_part("Task", table)
    assert staging.objects() == []


def test_object_names_must_be_api_names(staging: Staging) -> None:
    with pytest.raises(StagingError, match="not a Salesforce object API name"):
        staging.write_part("../Task", rows(["a"], ["a1"]))


# --- empty objects --------------------------------------------------------------------------------------

def test_an_object_never_staged_reads_as_empty_with_the_asked_columns(staging: Staging) -> None:
    assert list(staging.read("Task", ["Id", "Subject"]).columns) == ["Id", "Subject"]
    assert list(staging.read("Task").columns) == ["Id"]
    assert staging.read("Task").empty and staging.row_count("Task") == 0
    assert staging.objects() == [] and not staging.needs_compaction("Task")


def test_an_empty_table_writes_nothing(staging: Staging) -> None:
    assert staging.write_part("Task", rows([], [])) is None
    assert staging.write_part("Task", pa.table({"Id": pa.array([], pa.null())})) is None
    assert staging.objects() == []


def test_objects_lists_what_is_staged(staging: Staging) -> None:
    staging.write_part("Task", rows(["a"], ["a1"]))
    staging.write_tombstones("Event", ["e"], [T0])
    (staging.root / "Case").mkdir()
    refresh = staging.begin_refresh("User")
    refresh.write_part(pa.table({"Id": ["u"]}))
    assert staging.objects() == ["Event", "Task"]
    refresh.abort()


# --- durability -----------------------------------------------------------------------------------------

def test_a_temp_file_left_by_a_crash_is_ignored_and_then_swept(staging: Staging) -> None:
    staging.write_part("Task", rows(["a"], ["a1"]))
    leftover = staging.root / "Task" / ".tmp-0123-part-000000000002.parquet"
    leftover.write_bytes(b"PAR1 half a file")
    assert state(staging) == {"a": "a1"}
    staging.write_part("Task", rows(["b"], ["b1"]))
    assert not leftover.exists()
    assert state(staging) == {"a": "a1", "b": "b1"}


def test_a_crash_while_writing_a_part_leaves_the_staging_as_it_was(staging: Staging,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    staging.write_part("Task", rows(["a"], ["a1"]))
    crash_on(monkeypatch, staging_files.os, "replace")
    with pytest.raises(SimulatedCrash):
        staging.write_part("Task", rows(["a"], ["a2"]))
    assert state(staging) == {"a": "a1"}


# --- compaction -----------------------------------------------------------------------------------------

def _busy_history(staging: Staging) -> dict[str, Any]:
    """Several parts, updates, tombstones and an undelete; returns the state they should read as."""
    staging.write_part("Task", rows(["a", "b", "c", "d"], ["a1", "b1", "c1", "d1"]))
    staging.write_part("Task", rows(["b", "e"], ["b2", "e1"]))
    staging.write_tombstones("Task", ["c", "d"], [T0, T0])
    staging.write_part("Task", pa.table({"Id": ["d", "f"], "Subject": ["d-undeleted", "f1"],
                                         "CallType": ["Inbound", "Outbound"]}))
    return {"a": "a1", "b": "b2", "d": "d-undeleted", "e": "e1", "f": "f1"}


def test_compaction_reads_the_same_and_leaves_one_base(staging: Staging) -> None:
    expected = _busy_history(staging)
    before = staging.read("Task")
    base = staging.compact("Task")
    assert base is not None and base.name == "base-000000000005.parquet"
    pd.testing.assert_frame_equal(staging.read("Task"), before)
    assert state(staging) == expected
    assert file_names(staging) == [base.name]
    assert staging.row_count("Task") == 5
    assert staging.compact("Task") is None


def test_writes_after_a_compaction_apply_on_top_of_it(staging: Staging) -> None:
    _busy_history(staging)
    staging.compact("Task")
    staging.write_part("Task", rows(["a"], ["a2"]))
    staging.write_tombstones("Task", ["b"], [T0])
    assert state(staging) == {"a": "a2", "d": "d-undeleted", "e": "e1", "f": "f1"}


def _crash_while_writing_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    original = staging_layout.BucketWriter.close

    def half_written(writer: staging_layout.BucketWriter) -> None:
        original(writer)
        where = Path(writer._writer.where)
        where.write_bytes(where.read_bytes()[:100])
        raise SimulatedCrash("crash while writing")

    monkeypatch.setattr(staging_layout.BucketWriter, "close", half_written)


# Each crash point, and whether the new base is in place when the process dies there.
CRASH_POINTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], bool]] = {
    "while writing the base": (_crash_while_writing_the_base, False),
    "before fsyncing the base": (lambda mp: crash_on(mp, staging_files, "fsync_path"), False),
    "before renaming the base into place": (lambda mp: crash_on(mp, staging_files.os, "replace"), False),
    "after the rename, before fsyncing the directory": (
        lambda mp: crash_on(mp, staging_files, "fsync_path", after_calls=1), True),
    "before removing the superseded files": (lambda mp: crash_on(mp, staging_store, "sweep"), True),
    "after removing some superseded files": (lambda mp: crash_on(mp, Path, "unlink", after_calls=2), True),
}


@pytest.mark.parametrize("crash_point", CRASH_POINTS)
def test_a_crash_at_any_step_of_compaction_leaves_a_correct_staging(
        staging: Staging, monkeypatch: pytest.MonkeyPatch, crash_point: str) -> None:
    expected = _busy_history(staging)
    before = staging.read("Task")
    inject, base_installed = CRASH_POINTS[crash_point]

    with monkeypatch.context() as patched:
        inject(patched)
        with pytest.raises(SimulatedCrash):
            staging.compact("Task")

    left = file_names(staging)
    assert any(name.startswith("base-") for name in left) == base_installed
    assert any(name.startswith("part-") for name in left)  # old and new files side by side, or old alone
    restarted = Staging(staging.root)
    pd.testing.assert_frame_equal(restarted.read("Task"), before)
    assert restarted.row_count("Task") == len(expected)
    restarted.compact("Task")
    restarted.write_part("Task", rows(["g"], ["g1"]))
    assert state(restarted) == expected | {"g": "g1"}
    assert not [name for name in file_names(restarted) if name.startswith(".tmp-")]
    assert len(file_names(restarted)) == 2


def test_a_reader_survives_a_compaction_removing_the_files_it_listed(staging: Staging,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _busy_history(staging)
    original = staging_store.StagedReader
    compactor = Staging(staging.root)

    def compaction_in_between(path: Path) -> staging_layout.StagedReader:
        monkeypatch.setattr(staging_store, "StagedReader", original)
        compactor.compact("Task")  # another process, between this reader's listing and its opening the files
        return original(path)

    monkeypatch.setattr(staging_store, "StagedReader", compaction_in_between)
    assert state(staging) == expected


def test_a_reader_keeps_reading_the_files_it_opened_while_a_compaction_removes_them(staging: Staging) -> None:
    expected = _busy_history(staging)
    buckets = staging.buckets("Task", ["Id", "Subject"])
    first = next(buckets)  # the files are open now
    Staging(staging.root).compact("Task")
    read = pa.concat_tables([first, *buckets])
    assert dict(zip(read["Id"].to_pylist(), read["Subject"].to_pylist())) == expected


def test_needs_compaction_counts_parts_and_tombstones_since_the_base(tmp_path: Path) -> None:
    staging = Staging(tmp_path, compact_after=2)
    staging.write_part("Task", rows(["a"], ["a1"]))
    staging.write_tombstones("Task", ["a"], [T0])
    assert not staging.needs_compaction("Task")
    staging.write_part("Task", rows(["b"], ["b1"]))
    assert staging.needs_compaction("Task")
    staging.compact("Task")
    assert not staging.needs_compaction("Task")


# --- full refresh ---------------------------------------------------------------------------------------

def test_a_committed_refresh_replaces_the_object_and_the_old_stays_readable_until_then(staging: Staging) -> None:
    _busy_history(staging)
    with staging.begin_refresh("Task") as refresh:
        refresh.write_part(rows(["a", "z"], ["a-new", "z1"]))
        refresh.write_part(rows(["z"], ["z2"]))
        assert state(staging)["a"] == "a1"
        installed = refresh.commit()
    assert state(staging) == {"a": "a-new", "z": "z2"}
    assert file_names(staging) == [installed.name]
    assert refresh.state == "committed"
    assert not list((staging.root / ".refresh").iterdir())


def test_an_aborted_refresh_leaves_the_object_as_it_was(staging: Staging) -> None:
    expected = _busy_history(staging)
    refresh = staging.begin_refresh("Task")
    refresh.write_part(rows(["z"], ["z1"]))
    refresh.abort()
    assert state(staging) == expected
    with pytest.raises(StagingError, match="already aborted"):
        refresh.write_part(rows(["y"], ["y1"]))


def test_leaving_a_refresh_block_without_commit_aborts_it(staging: Staging) -> None:
    expected = _busy_history(staging)
    with pytest.raises(RuntimeError):
        with staging.begin_refresh("Task") as refresh:
            refresh.write_part(rows(["z"], ["z1"]))
            raise RuntimeError("the pull failed")
    assert refresh.state == "aborted"
    assert state(staging) == expected


def test_a_refresh_that_found_nothing_commits_an_empty_object(staging: Staging) -> None:
    _busy_history(staging)
    with staging.begin_refresh("Task") as refresh:
        refresh.commit()
    assert staging.read("Task").empty and staging.row_count("Task") == 0


def test_a_refresh_of_an_object_never_staged_creates_it(staging: Staging) -> None:
    with staging.begin_refresh("Case") as refresh:
        refresh.write_part(pa.table({"Id": ["c"], "Status": ["New"]}))
        refresh.write_tombstones(["gone"], [T0])
        refresh.commit()
    assert staging.read("Case").to_dict("records") == [{"Id": "c", "Status": "New"}]


def test_a_crash_during_a_refresh_commit_keeps_the_old_staging_and_the_next_refresh_cleans_up(
        staging: Staging, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _busy_history(staging)
    refresh = staging.begin_refresh("Task")
    refresh.write_part(rows(["z"], ["z1"]))
    with monkeypatch.context() as patched:
        crash_on(patched, staging_files.os, "replace")
        with pytest.raises(SimulatedCrash):
            refresh.commit()

    restarted = Staging(staging.root)
    assert state(restarted) == expected
    assert len(list((restarted.root / ".refresh").iterdir())) == 1  # the dead refresh's scratch
    with restarted.begin_refresh("Task") as again:
        assert not list((restarted.root / ".refresh").iterdir())
        again.write_part(rows(["y"], ["y1"]))
        again.commit()
    assert state(restarted) == {"y": "y1"}


# --- scale ----------------------------------------------------------------------------------------------

def _task_page(ids: np.ndarray, rng: np.random.Generator, stamp_base: int) -> pa.Table:
    """A Task page of 11 columns with realistic types."""
    n = len(ids)
    owners = np.char.add("005", rng.integers(0, 20_000, n).astype(str))
    return pa.table({
        "Id": pa.array(ids),
        "OwnerId": pa.array(owners),
        "WhoId": pa.array(np.char.add("003", rng.integers(0, 500_000, n).astype(str))),
        "WhatId": pa.array(np.char.add("001", rng.integers(0, 100_000, n).astype(str))),
        "Subject": pa.array(rng.choice(["Call", "Email", "Meeting", "Follow up"], n)),
        "Status": pa.array(rng.choice(["Completed", "Open"], n)),
        "Priority": pa.array(rng.choice(["Normal", "High"], n)),
        "TaskSubtype": pa.array(rng.choice(["Call", "Email", "Task"], n)),
        "CallDurationInSeconds": pa.array(rng.integers(0, 3_600, n)),
        "ActivityDate": pa.array(rng.integers(19_000, 20_000, n).astype("datetime64[D]")),
        "SystemModstamp": pa.array(stamp_base + rng.integers(0, 86_400_000, n), STAMP),
    })


def test_a_million_row_merge_and_compaction(staging: Staging, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints timings (never asserted): 1M Task rows in 10 parts, 100k updates, 10k deletions."""
    rng = np.random.default_rng(7)
    ids = np.char.add("00T", np.arange(1_000_000).astype(str))
    started = time.perf_counter()
    for chunk in np.array_split(ids, 10):
        staging.write_part("Task", _task_page(chunk, rng, 1_700_000_000_000))
    for _ in range(2):
        staging.write_part("Task", _task_page(rng.choice(ids, 50_000, replace=False), rng, 1_800_000_000_000))
    gone = rng.choice(ids, 10_000, replace=False).tolist()
    staging.write_tombstones("Task", gone, [T0] * len(gone))
    wrote = time.perf_counter() - started

    timings = {}
    started = time.perf_counter()
    merged = staging.read_arrow("Task")
    timings["read_arrow (merge of 13 files, 1.1M versions)"] = time.perf_counter() - started
    started = time.perf_counter()
    narrow = staging.read_arrow("Task", ["Id", "OwnerId", "SystemModstamp"])
    timings["read_arrow of 3 columns"] = time.perf_counter() - started
    started = time.perf_counter()
    staging.compact("Task")
    timings["compact"] = time.perf_counter() - started
    started = time.perf_counter()
    after = staging.read_arrow("Task")
    timings["read_arrow after compaction"] = time.perf_counter() - started
    started = time.perf_counter()
    frame = staging.read("Task")
    timings["read (pandas) after compaction"] = time.perf_counter() - started

    assert merged.num_rows == narrow.num_rows == after.num_rows == len(frame) == 990_000
    assert after.equals(merged)
    with capsys.disabled():
        print(f"\n1M-row staging: wrote 13 files in {wrote:.2f}s")
        for what, seconds in timings.items():
            print(f"  {what}: {seconds:.2f}s")


def test_columns_in_every_file_names_what_older_files_lack(staging: Staging) -> None:
    assert staging.columns_in_every_file("Task") is None
    staging.write_part("Task", rows(["00T1"], ["a"]))
    staging.write_part("Task", rows(["00T2"], ["b"]).append_column("WhoId", pa.array(["003A"])))
    assert staging.columns_in_every_file("Task") == set(rows(["00T1"], ["a"]).schema.names)
    staging.compact("Task")  # one base: every column it holds, the missing WhoId as nulls
    assert "WhoId" in staging.columns_in_every_file("Task")


def test_files_without_rows_do_not_count_for_columns(staging: Staging) -> None:
    refresh = staging.begin_refresh("Quote")
    refresh.commit()  # a refresh of an object with no rows at all
    assert staging.columns_in_every_file("Quote") is None


# --- versions by cursor ---------------------------------------------------------------------------------

def test_the_latest_version_by_cursor_wins_whatever_order_the_parts_arrive_in(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "b"], ["a-new", "b-old"], stamps=[T0 + timedelta(hours=2), T0]),
                       version="SystemModstamp")
    staging.write_part("Task", rows(["a", "b"], ["a-stale", "b-new"], stamps=[T0, T0 + timedelta(hours=1)]),
                       version="SystemModstamp")
    assert state(staging) == {"a": "a-new", "b": "b-new"}
    staging.compact("Task")
    assert state(staging) == {"a": "a-new", "b": "b-new"}


def test_a_tombstone_removes_the_versions_it_postdates_and_a_later_version_lives(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "b"], ["a1", "b1"], stamps=[T0, T0]), version="SystemModstamp")
    staging.write_tombstones("Task", ["a", "b"], [T0 + timedelta(hours=1)] * 2)
    staging.write_part("Task", rows(["a"], ["a-stale"], stamps=[T0]), version="SystemModstamp")  # late, old copy
    staging.write_part("Task", rows(["b"], ["b-undeleted"], stamps=[T0 + timedelta(hours=2)]),
                       version="SystemModstamp")
    assert state(staging) == {"b": "b-undeleted"}


def test_a_part_without_its_version_column_is_refused(staging: Staging) -> None:
    with pytest.raises(StagingError, match="no version column"):
        staging.write_part("Task", pa.table({"Id": ["a"]}), version="SystemModstamp")


# --- buckets --------------------------------------------------------------------------------------------

def test_large_files_hold_one_row_group_per_bucket_and_buckets_partition_the_ids(staging: Staging) -> None:
    ids = [f"00T{n:012d}" for n in range(50_000)]
    staging.write_part("Task", rows(ids, ids), version="SystemModstamp")
    staging.write_tombstones("Task", ids[:10], [T0 + timedelta(days=1)] * 10)
    (part,) = (staging.root / "Task").glob("part-*")
    assert pq.ParquetFile(part).metadata.num_row_groups == staging_layout.BUCKETS

    buckets = list(staging.buckets("Task", ["Id"]))

    assert len(buckets) == staging_layout.BUCKETS
    seen = [record_id for bucket in buckets for record_id in bucket["Id"].to_pylist()]
    assert sorted(seen) == ids[10:] and len(seen) == len(set(seen))
    assert max(bucket.num_rows for bucket in buckets) < 2 * len(ids) / staging_layout.BUCKETS  # evenly spread


def test_the_15_and_18_character_forms_of_an_id_fall_in_the_same_bucket() -> None:
    short, long = "00THs00000AbCdE", "00THs00000AbCdEAAA"
    assert (staging_layout.bucket_of(pa.array([short]), 16) == staging_layout.bucket_of(pa.array([long]), 16)).all()


def test_files_of_another_layout_are_read_alongside_bucketed_ones(staging: Staging) -> None:
    ids = [f"00T{n:012d}" for n in range(30_000)]
    staging.write_part("Task", rows(ids, ["new"] * len(ids)), version="SystemModstamp")  # bucketed, 16 groups
    older = staging.root / "Task" / "part-000000000000.parquet"  # as written before buckets existed
    pq.write_table(rows(ids[:5] + ["00Tolder"], ["old"] * 6), older)

    read = staging.read("Task", ["Id", "Subject"])

    assert len(read) == len(ids) + 1 and set(read.loc[read["Id"] != "00Tolder", "Subject"]) == {"new"}
    assert list(read["Id"]) == sorted(read["Id"])


def test_compaction_prunes_rows_older_than_the_cutoff_and_keeps_the_rest(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "b", "c"], ["a1", "b1", "c1"],
                                    stamps=[T0 - timedelta(days=200), T0, T0 + timedelta(days=1)]),
                       version="SystemModstamp")
    staging.write_part("Task", rows(["d"], ["d1"], stamps=[T0]), version="SystemModstamp")
    staging.compact("Task", prune=Prune("SystemModstamp", T0 - timedelta(days=180)))
    assert state(staging) == {"b": "b1", "c": "c1", "d": "d1"}


def test_live_ids_are_those_a_read_would_return(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "b", "c"], ["a1", "b1", "c1"]))
    staging.write_tombstones("Task", ["b"], [T0])
    assert sorted(staging.live_ids("Task", pa.array(["a", "b", "z", "a"])).to_pylist()) == ["a"]


def test_columns_can_be_read_without_the_id(staging: Staging) -> None:
    ids = [f"00T{n:012d}" for n in range(30_000)]
    staging.write_part("Task", rows(ids, ids))
    subjects = staging.read_arrow("Task", ["Subject"])
    assert subjects.column_names == ["Subject"] and subjects["Subject"].to_pylist() == sorted(ids)


def test_within_one_part_the_latest_cursor_wins_and_equal_cursors_keep_the_later_row(staging: Staging) -> None:
    staging.write_part("Task", rows(["a", "a", "b", "b"], ["a-new", "a-old", "b-first", "b-second"],
                                    stamps=[T0 + timedelta(hours=1), T0, T0, T0]), version="SystemModstamp")
    assert state(staging) == {"a": "a-new", "b": "b-second"}


def test_an_object_grown_from_small_parts_is_compacted_into_buckets(staging: Staging) -> None:
    for start in range(0, 60_000, 15_000):  # nightly parts, each too small for buckets of its own
        ids = [f"00T{n:012d}" for n in range(start, start + 15_000)]
        staging.write_part("Task", rows(ids, ids), version="SystemModstamp")
    base = staging.compact("Task")
    assert pq.ParquetFile(base).metadata.num_row_groups == staging_layout.BUCKETS
    assert max(bucket.num_rows for bucket in staging.buckets("Task", ["Id"])) < 60_000 / staging_layout.BUCKETS * 2


def test_large_parts_wait_for_compaction_until_small_files_or_many_files_call_for_it(tmp_path: Path) -> None:
    staging = Staging(tmp_path, compact_after=2)
    for start in range(0, 3 * 20_000, 20_000):  # three large (bucketed) parts, as a first pull writes
        ids = [f"00T{n:012d}" for n in range(start, start + 20_000)]
        staging.write_part("Task", rows(ids, ids), version="SystemModstamp")
    assert not staging.needs_compaction("Task")
    for name in ("a", "b", "c"):  # three small nightly parts
        staging.write_part("Task", rows([name], [name]), version="SystemModstamp")
    assert staging.needs_compaction("Task")
    many = Staging(tmp_path / "many", compact_after=1)
    for start in range(0, 5 * 20_000, 20_000):  # more than 4 x compact_after files, all large
        ids = [f"00T{n:012d}" for n in range(start, start + 20_000)]
        many.write_part("Task", rows(ids, ids), version="SystemModstamp")
    assert many.needs_compaction("Task")
