"""Running expectation suites with Great Expectations, chunk by chunk, into `Check`s and Data Docs.

One `GxRunner` is one in-memory (ephemeral) GX context: suites are added to it as code (see
`suites.py`), each is validated over one or more pandas DataFrames through a Checkpoint, whose results
GX keeps for the Data Docs site the runner writes at the end (`build_docs`).

Why chunks: GX on pandas holds about 1.5 GiB extra for 5 million rows. A staged object is validated a
group of Id buckets at a time instead (see tasks/validation.py); per-expectation counts and sample Ids
are summed over the chunks here. That is sound for every row-level expectation, and for uniqueness
too, because staging puts each Id in exactly one bucket. Table-level expectations (a row count) are
only ever given one frame.

`import great_expectations` takes seconds, so it happens when a runner is made, not on import.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from expectations.checks import SAMPLES, Check, Stage

log = logging.getLogger(__name__)

DOCS_SITE = "persona_sync"


@dataclass(frozen=True)
class Outcome:
    """One expectation over every chunk it was given."""

    success: bool
    rows: int  # rows seen (for a table-level expectation: the frame's rows)
    unexpected: int  # rows that failed it (0 for a table-level expectation)
    samples: tuple[str, ...]  # Ids (the frame's id column) of the first rows that failed
    observed: Any = None  # a table-level expectation's observed value


@dataclass(frozen=True)
class Expect:
    """An expectation, and how an operator reads it: a name, the limit in words, and the message of an
    outcome (by default "N of M rows fail"). `warn`: a failure is a warning, the run goes on."""

    expectation: Any  # a great_expectations.expectations.Expectation
    name: str
    limit: str
    explain: Callable[[Outcome], str] | None = None
    warn: bool = False
    # Row-level expectations report how many rows fail; table-level ones an observed value.
    kind: Literal["rows", "table"] = "rows"
    observed: Callable[[Outcome], str] | None = field(default=None, compare=False)

    def check(self, stage: Stage, outcome: Outcome) -> Check:
        status = "passed" if outcome.success else "warned" if self.warn else "failed"
        if self.observed is not None:
            observed = self.observed(outcome)
        elif self.kind == "table":
            observed = str(outcome.observed)
        else:
            observed = f"{outcome.unexpected:,} of {outcome.rows:,} rows"
        if self.explain is not None and not outcome.success:
            message = self.explain(outcome)
        else:
            message = f"{self.name}: {observed}" + ("" if outcome.success else f" (limit: {self.limit})")
        return Check(stage, self.name, status, observed, self.limit, message, outcome.samples)


class GxRunner:
    """An ephemeral Great Expectations context that validates suites and writes their Data Docs."""

    def __init__(self, docs_dir: Path | None = None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _quiet_great_expectations()
        _skip_batch_fingerprints()
        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars on stderr
        self.docs_dir = docs_dir
        if docs_dir is not None:
            self.context.add_data_docs_site(site_name=DOCS_SITE, site_config={
                "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir.resolve())}})
        self._source = self.context.data_sources.add_pandas("persona-sync")

    def validate(self, stage: Stage, suite_name: str, expects: list[Expect], frames: Iterable[pd.DataFrame], *,
                 id_column: str) -> list[Check]:
        """Validates every frame against the suite; one Check per expectation, over all frames.

        `id_column` names the column whose values are the sample Ids of failing rows. A suite given no
        frame at all (an object with nothing staged) is skipped: its checks say so.
        """
        gx = self._gx
        from great_expectations.core.run_identifier import RunIdentifier

        # The whole suite at once: adding expectations one by one to a registered suite saves it again
        # each time (a suite of 200 expectations: 4 s instead of 0.1 s).
        suite = self.context.suites.add(gx.ExpectationSuite(name=suite_name,
                                                            expectations=[expect.expectation for expect in expects]))
        ids = [expect.expectation.id for expect in expects]
        asset = self._source.add_dataframe_asset(suite_name)
        batch = asset.add_batch_definition_whole_dataframe("whole")
        definition = self.context.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch,
                                                                                     suite=suite))
        checkpoint = self.context.checkpoints.add(gx.Checkpoint(
            name=suite_name, validation_definitions=[definition], actions=[],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLES,
                           "unexpected_index_column_names": [id_column]}))
        totals = {expectation_id: _Total() for expectation_id in ids}
        parts = 0
        for frame in frames:
            parts += 1
            run = checkpoint.run(batch_parameters={"dataframe": frame},
                                 run_id=RunIdentifier(run_name=f"{suite_name}, part {parts}"))
            for result in next(iter(run.run_results.values())).results:
                totals[result.expectation_config.id].add(result, len(frame), id_column)
            self._release_batches()
        if parts == 0:
            return [Check(stage, expect.name, "skipped", "no rows", expect.limit, f"{expect.name}: no rows to check")
                    for expect in expects]
        return [expect.check(stage, totals[expectation_id].outcome()) for expect, expectation_id in zip(expects, ids)]

    def _release_batches(self) -> None:
        """Lets go of the frame just validated and its cached metrics. GX keeps the last batch of every
        asset and every metric it computed until the context goes: about 200 MiB over a large org's
        objects. These are GX 1.24 internals (pinned in uv.lock); if they move, memory is only higher."""
        try:
            engine = self._source.get_execution_engine()
            engine._batch_manager._batch_data_cache.clear()
            engine._batch_manager.reset_batch_cache()
            engine._metric_cache.clear()
        except AttributeError:
            log.debug("Great Expectations' batch caches are not where 1.24 kept them; not released")

    def build_docs(self, shared_static: Path | None = None) -> Path | None:
        """Writes the Data Docs of everything validated so far; returns the index page (None: no docs).

        GX copies 4 MB of fonts and images into every site; with `shared_static` the site's `static`
        folder becomes a link to that one folder (made from the first site), so a run's docs stay small.
        """
        if self.docs_dir is None:
            return None
        self.context.build_data_docs(site_names=[DOCS_SITE])
        if shared_static is not None:
            _share_static(self.docs_dir / "static", shared_static)
        return self.docs_dir / "index.html"


def _share_static(static: Path, shared: Path) -> None:
    """Replaces a site's `static` folder by a relative link to `shared` (kept as it is where links fail)."""
    if not static.is_dir() or static.is_symlink():
        return
    if not shared.exists():
        shutil.copytree(static, shared)
    try:
        link = static.with_name("static-link")
        link.symlink_to(os.path.relpath(shared, static.parent), target_is_directory=True)
    except OSError:
        return
    shutil.rmtree(static)
    link.rename(static)


def _skip_batch_fingerprints() -> None:
    """GX hashes every row of each frame it is given (under 1 GB) to label the batch in its results: 1.7 s
    and 70-90 MiB on a large org for a label nobody reads. A threshold of 0 turns it off."""
    from great_expectations.execution_engine import pandas_execution_engine

    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0


def _quiet_great_expectations() -> None:
    """GX sets some of its loggers to INFO itself (one announces a temporary folder per context): only
    its warnings and errors reach our logs."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)


@dataclass
class _Total:
    success: bool = True
    rows: int = 0
    unexpected: int = 0
    samples: list[str] = field(default_factory=list)
    observed: Any = None

    def add(self, result: Any, frame_rows: int, id_column: str) -> None:
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise RuntimeError(f"Great Expectations could not evaluate {result.expectation_config.type}: "
                               f"{result.exception_info.get('exception_message')}")
        details = result.result or {}
        self.success = self.success and bool(result.success)
        self.rows += int(details.get("element_count", frame_rows) or 0)
        self.unexpected += int(details.get("unexpected_count", 0) or 0)
        self.observed = details.get("observed_value", self.observed)
        for row in details.get("partial_unexpected_index_list") or []:
            if len(self.samples) < SAMPLES:
                value = row.get(id_column) if isinstance(row, dict) else row
                self.samples.append(str(value))

    def outcome(self) -> Outcome:
        return Outcome(self.success, self.rows, self.unexpected, tuple(self.samples), self.observed)
