"""The persona stages of a run: features from staging, then assignments from the catalog.

Each stage is a plain function (testable without Prefect) that reads and writes through the
connectors, and passes on a path or an id rather than a DataFrame: what crosses between Prefect tasks
stays small, and each stage's output is on disk for the next run, `explain` and `evaluate`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from connectors.staging import Staging
from connectors.state import StateStore
from core.configs import PersonasConfig, StagingConfig, StateConfig
from personas.catalog import Catalog, default_catalog_path, load_catalog
from personas.features import Window, compute_features_partitioned, unavailable_features
from personas.calibration import CalibrationError, CalibrationReport, calibrate, catalog_diff, catalog_yaml, read_labels
from personas.rules import assign

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssignmentSummary:
    """What an assignment stage decided, for the run ledger, the Prefect UI and the command line."""

    run_id: str
    as_of: datetime
    catalog_version: str
    users: int
    distribution: dict[str, int]  # persona label (or Unassigned) -> users
    features_path: Path
    # The assignments themselves (index user Id), kept here until validation lets them be stored.
    assignments_path: Path
    # Set when the run reuses another run's assignments (its inputs were unchanged, tasks/reuse.py): the
    # run that stored them.
    stored_run_id: str | None = None
    # Features the catalog reads that this org cannot measure (name -> why): their conditions were dropped.
    unavailable: dict[str, str] = field(default_factory=dict)


def catalog_path(config: PersonasConfig) -> Path:
    """The catalog file the settings name (PERSONA_SYNC_CATALOG_FILE), or the default one we ship."""
    return Path(config.catalog_file or default_catalog_path())


def catalog_for(config: PersonasConfig) -> Catalog:
    """The catalog the settings name (PERSONA_SYNC_CATALOG_FILE), or the default one we ship.

    Parsed once per content of the file: a run asks for it at every stage, and parsing it with the line of
    every field takes about a quarter of a second each time, while reading and hashing it takes well under
    a millisecond. A catalog that fails to load is parsed again next time, so a fixed file is picked up."""
    path = catalog_path(config)
    try:
        content = path.read_bytes()
    except OSError:
        return load_catalog(path)  # says what is wrong with the path
    return _parsed_catalog(str(path), hashlib.sha256(content).hexdigest())


@lru_cache(maxsize=8)
def _parsed_catalog(path: str, sha256: str) -> Catalog:
    """The catalog at `path` whose content has this hash (`catalog_for`). A Catalog is a frozen model that
    nothing changes, so runs can share one."""
    return load_catalog(path)


def features_path(config: PersonasConfig, as_of: datetime) -> Path:
    """Where the features of one as-of are kept (one file per as-of: a rerun overwrites it)."""
    return config.features_dir / f"features-{as_of.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}.parquet"


def compute_and_store_features(config: PersonasConfig, staging: StagingConfig, as_of: datetime) -> Path:
    """Per-user features over the window ending at `as_of`, from staging, written to Parquet."""
    window = Window(as_of=as_of, days=config.window_days)
    features = compute_features_partitioned(Staging.from_config(staging), window, config.partitions)
    path = features_path(config, as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    features.to_parquet(temporary)
    temporary.replace(path)
    log.info("features: %d users over %d days to %s", len(features), window.days, as_of.isoformat())
    return path


def candidates_path(config: PersonasConfig, run_id: str) -> Path:
    """Where a run keeps the assignments it decided until validation passes them (one file per run)."""
    return config.features_dir.parent / "assignments" / f"assignments-{run_id}.parquet"


def assign_candidates(config: PersonasConfig, state_config: StateConfig, features_file: Path, run_id: str,
                      as_of: datetime) -> AssignmentSummary:
    """Assigns every user a persona (stable against their current one), into a file of the run: nothing
    is stored until the run's checks pass (`store_assignments`)."""
    catalog = catalog_for(config)
    features = pd.read_parquet(features_file)
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        current = state.latest_assignments(before=as_of)
    assignments = assign(features, catalog, current=current["persona"] if len(current) else None,
                         stability_margin=config.stability_margin)
    path = candidates_path(config, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    assignments.to_parquet(temporary)
    temporary.replace(path)
    distribution = assignments["persona"].value_counts().sort_index().to_dict()
    log.info("assign: %d users, catalog %s: %s", len(assignments), catalog.version, distribution)
    unavailable = {name: why for name, why in unavailable_features(features).items() if name in catalog.features}
    if unavailable:
        log.warning("assign: %d features the catalog reads are not measured on this org; their conditions are "
                    "dropped: %s", len(unavailable), ", ".join(unavailable))
    return AssignmentSummary(run_id, as_of, catalog.version, len(assignments),
                             {str(key): int(value) for key, value in distribution.items()}, features_file, path,
                             unavailable=unavailable)


def reused_assignments(config: PersonasConfig, state_config: StateConfig, run_id: str, stored_run_id: str,
                       as_of: datetime) -> AssignmentSummary:
    """The summary of a run that reuses the assignments run `stored_run_id` stored (same inputs)."""
    with StateStore.from_config(state_config) as state:
        stored = state.assignments(stored_run_id)
    distribution = stored["persona"].value_counts().sort_index().to_dict()
    features_file = features_path(config, as_of)
    return AssignmentSummary(run_id, as_of, str(stored["catalog_version"].iloc[0]) if len(stored) else "", len(stored),
                             {str(key): int(value) for key, value in distribution.items()},
                             features_file, candidates_path(config, run_id), stored_run_id,
                             unavailable=_unavailable_used(features_file, catalog_for(config)))


def _unavailable_used(features_file: Path, catalog: Catalog) -> dict[str, str]:
    """The features the catalog reads that the org of `features_file` could not measure (name -> why)."""
    if not features_file.exists():
        return {}
    features = pd.read_parquet(features_file, columns=["IsActive"])  # the attrs come with any column
    return {name: why for name, why in unavailable_features(features).items() if name in catalog.features}


def store_assignments(state_config: StateConfig, summary: AssignmentSummary) -> int:
    """Stores a validated run's assignments under its run id: from now on they are every user's current
    persona (what the next run keeps stable and compares with, and what the push writes). Users whose
    persona changed get a new row in the persona history."""
    assignments = pd.read_parquet(summary.assignments_path)
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        stored = state.save_assignments(summary.run_id, summary.as_of, summary.catalog_version, assignments)
        state.record_history(summary.run_id, summary.as_of, summary.catalog_version, assignments)
    summary.assignments_path.unlink()  # the state database holds them now; a failed run's file stays for a look
    return stored


@dataclass(frozen=True)
class Calibrated:
    """What `calibrate_catalog` wrote and found."""

    path: Path
    report: CalibrationReport
    diff: str
    as_of: datetime


def calibrate_catalog(config: PersonasConfig, state_config: StateConfig, labels_file: Path, out: Path | None = None,
                      *, folds: int = 5) -> Calibrated:
    """Fits the configured catalog to the labelled users of `labels_file` (CSV Id,persona) on the features
    of the latest stored run, writes it as a new catalog version (default: next to the features, under
    `catalogs/`), and returns the report (macro-F1 before and cross-validated after) and the YAML diff.
    Nothing else changes: the catalog in use is the one PERSONA_SYNC_CATALOG_FILE names."""
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        latest = state.latest_assignments()
    if latest.empty:
        raise CalibrationError("no run has stored assignments yet, so there are no features to calibrate on: "
                               "run `persona-sync run` first")
    as_of = latest["as_of"].iloc[0].to_pydatetime()
    features_file = features_path(config, as_of)
    if not features_file.exists():
        raise CalibrationError(f"the features of the latest run (as of {as_of:%Y-%m-%d %H:%M} UTC) are gone from "
                               f"{features_file}: run `persona-sync run` again to compute them")
    features = pd.read_parquet(features_file)
    catalog = catalog_for(config)
    active = features.index[features["IsActive"].astype(bool)]
    labels = read_labels(labels_file, catalog, list(active))
    version = f"{catalog.version}-calibrated-{as_of:%Y%m%d}"
    calibrated, report = calibrate(catalog, features, labels, folds=folds, version=version)
    path = out or config.features_dir.parent / "catalogs" / f"catalog-{version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(catalog_yaml(calibrated), encoding="utf-8")
    load_catalog(temporary)  # what is written loads as a valid catalog
    temporary.replace(path)
    diff = catalog_diff(catalog, calibrated, before_name=f"catalog {catalog.version}", after_name=str(path))
    return Calibrated(path, report, diff, as_of)
