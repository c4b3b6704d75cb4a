"""How often the assignments are right: accuracy, macro F1, per-persona precision and recall, a confusion matrix.

Who is evaluated: users that have both an assignment and a true persona, optionally narrowed to `only`
(the run evaluates its active users: a deactivated user did nothing in the window and is nobody to
judge). An `Unassigned` user counts against the recall of their true persona and is shown in its own
column of the confusion matrix; it is not a class of its own, so it has no precision and no place in
the macro average. Truth users with no assignment at all are counted (`missing`), never scored.

When the assignments carry a confidence (the margin over the runner-up, what the push writes to
Persona_Confidence__c), the users are also counted by confidence band, with how many of each band are
right: what a confidence is worth on this org, so a team knows which confidence to act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from personas.rules import UNASSIGNED


@dataclass(frozen=True)
class Evaluation:
    """The comparison of assignments with the truth.

    per_persona: index persona label; columns precision, recall, f1, support (true users).
    confusion: rows true persona, columns assigned persona plus `Unassigned`; cells are user counts.
    """

    users: int
    accuracy: float
    macro_f1: float
    per_persona: pd.DataFrame
    confusion: pd.DataFrame
    unassigned: int
    missing: int
    by_confidence: pd.DataFrame | None = None  # see `right_by_confidence`; None without a confidence column

    def table(self) -> str:
        """A printable report: the headline numbers, per-persona metrics and the confusion matrix
        (its columns numbered like the persona rows, U = Unassigned)."""
        lines = [f"Users evaluated: {self.users}   accuracy {self.accuracy:.3f}   macro F1 {self.macro_f1:.3f}   "
                 f"unassigned {self.unassigned}" + (f"   without assignment {self.missing}" if self.missing else ""),
                 ""]
        width = max([len(label) for label in self.per_persona.index] + [7])
        lines.append(f"{'#':>3} {'persona':<{width}} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}")
        for number, (label, row) in enumerate(self.per_persona.iterrows(), start=1):
            lines.append(f"{number:>3} {label:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                         f"{row['f1']:>6.3f} {int(row['support']):>8}")
        lines += ["", "Confusion matrix (rows: true persona, columns: assigned; numbers as above, U = Unassigned)"]
        codes = {label: str(number) for number, label in enumerate(self.per_persona.index, start=1)}
        codes[UNASSIGNED] = "U"
        header = f"{'':>3} " + " ".join(f"{codes.get(column, '?'):>4}" for column in self.confusion.columns)
        lines.append(header)
        for label, row in self.confusion.iterrows():
            lines.append(f"{codes.get(label, '?'):>3} " + " ".join(f"{int(count):>4}" for count in row))
        if self.by_confidence is not None and self.users:
            lines += ["", "Right by confidence (the margin over the runner-up)",
                      f"{'confidence':>12} {'users':>7} {'share':>6} {'right':>6}"]
            for band, row in self.by_confidence.iterrows():
                right = f"{row['right'] / row['users']:>6.3f}" if row["users"] and band != UNASSIGNED else f"{'':>6}"
                lines.append(f"{band:>12} {int(row['users']):>7} {row['users'] / self.users:>6.1%} {right}")
        return "\n".join(lines)


def evaluate(assignments: pd.DataFrame, truth: pd.DataFrame, *, only: Iterable[str] | None = None,
             labels: Sequence[str] | None = None) -> Evaluation:
    """Compares `assignments` (index user Id, column persona) with `truth` (columns Id, persona, or
    indexed by Id with a persona column).

    `only`: evaluate just these user Ids (e.g. the active users). `labels`: the persona order of the
    report (e.g. the catalog's); by default the true personas sorted by name, then any other assigned.
    Macro F1 averages F1 over every persona that is true or assigned for some evaluated user.
    """
    truth_persona = _persona_by_id(truth)
    assigned_persona = assignments["persona"].astype(str)
    users = truth_persona.index.intersection(assigned_persona.index)
    if only is not None:
        users = users.intersection(pd.Index(list(only)))
    missing = int(len(truth_persona.index.difference(assigned_persona.index)))
    actual = truth_persona.loc[users]
    predicted = assigned_persona.loc[users]

    present = set(actual) | (set(predicted) - {UNASSIGNED})
    order = [label for label in (labels or []) if label in present]
    order += sorted(present - set(order))
    rows = pd.Index(order).get_indexer(actual.to_numpy())
    columns = pd.Index([*order, UNASSIGNED]).get_indexer(predicted.to_numpy())
    counts = np.zeros((len(order), len(order) + 1), dtype=int)
    np.add.at(counts, (rows, columns), 1)
    confusion = pd.DataFrame(counts, index=pd.Index(order, name="true"),
                             columns=pd.Index([*order, UNASSIGNED], name="assigned"))

    hits = np.diag(counts[:, :len(order)]).astype(float)
    support = counts.sum(axis=1).astype(float)
    predicted_count = counts[:, :len(order)].sum(axis=0).astype(float)
    precision = np.divide(hits, predicted_count, out=np.zeros_like(hits), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    per_persona = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)},
                               index=pd.Index(order, name="persona"))
    by_confidence = (right_by_confidence(predicted, actual, assignments["confidence"].loc[users])
                     if "confidence" in assignments.columns else None)
    return Evaluation(users=len(users), accuracy=float(hits.sum() / len(users)) if len(users) else 0.0,
                      macro_f1=float(f1.mean()) if len(order) else 0.0, per_persona=per_persona,
                      confusion=confusion, unassigned=int((predicted == UNASSIGNED).sum()), missing=missing,
                      by_confidence=by_confidence)


CONFIDENCE_BANDS = (0.2, 0.1, 0.05, 0.0)  # the lower edges of the bands, most confident first


def right_by_confidence(predicted: pd.Series, actual: pd.Series, confidence: pd.Series) -> pd.DataFrame:
    """How many users fall in each confidence band (`>= 0.2`, `0.1-0.2`, `0.05-0.1`, `0-0.05`; the
    Unassigned, who have no confidence, in a band of their own) and how many of each are right. The three
    Series are aligned by user. Index: band names; columns `users`, `right`."""
    right = predicted.to_numpy() == actual.to_numpy()
    assigned = predicted.to_numpy() != UNASSIGNED
    values = confidence.to_numpy(dtype=float)
    rows, upper = {}, None
    for lower in CONFIDENCE_BANDS:
        band = assigned & (values >= lower) & ((values < upper) if upper is not None else True)
        rows[f">= {lower:g}" if upper is None else f"{lower:g}-{upper:g}"] = (int(band.sum()), int(right[band].sum()))
        upper = lower
    rows[UNASSIGNED] = (int((~assigned).sum()), 0)
    return pd.DataFrame.from_dict(rows, orient="index", columns=["users", "right"])


def macro_f1_of_codes(truth: np.ndarray, predicted: np.ndarray, personas: int) -> float:
    """`evaluate`'s macro F1 on persona codes (catalog positions; -1 = Unassigned, or for truth: not a
    catalog persona, left out): F1 averaged over the personas true or assigned for some user. For the loops
    that score a catalog thousands of times (calibration, the tuner), where DataFrames would cost too much."""
    keep = truth >= 0
    truth, predicted = truth[keep], predicted[keep]
    hits = np.bincount(truth[truth == predicted], minlength=personas).astype(float)
    support = np.bincount(truth, minlength=personas).astype(float)
    assigned = np.bincount(predicted[predicted >= 0], minlength=personas).astype(float)
    present = (support > 0) | (assigned > 0)
    precision = np.divide(hits, assigned, out=np.zeros(personas), where=assigned > 0)
    recall = np.divide(hits, support, out=np.zeros(personas), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(personas), where=both > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def _persona_by_id(truth: pd.DataFrame) -> pd.Series:
    frame = truth.set_index("Id") if "Id" in truth.columns else truth
    return frame["persona"].astype(str)


def save_confusion_png(evaluation: Evaluation, path: str | Path) -> Path:
    """Draws the confusion matrix (counts in the cells, shaded by share of the true persona) to a PNG."""
    # The Agg canvas directly, not pyplot: no global backend or figure state, safe in flows and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    confusion = evaluation.confusion
    counts = confusion.to_numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    rows, columns = counts.shape
    figure = Figure(figsize=(3.2 + 0.62 * columns, 3.2 + 0.5 * rows), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for row in range(rows):
        for column in range(columns):
            if counts[row, column]:
                axes.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=9,
                          color="white" if shares[row, column] > 0.55 else "black")
    axes.set_xticks(range(columns), labels=list(confusion.columns), rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(rows), labels=list(confusion.index))
    axes.set_xlabel("assigned persona (shade: share of the true persona's users)")
    axes.set_ylabel("true persona")
    axes.set_title(f"{evaluation.users} users: accuracy {evaluation.accuracy:.3f}, macro F1 {evaluation.macro_f1:.3f}"
                   f", unassigned {evaluation.unassigned}")
    axes.set_xticks(np.arange(-0.5, columns), minor=True)
    axes.set_yticks(np.arange(-0.5, rows), minor=True)
    axes.grid(which="minor", color="#dddddd", linewidth=0.5)
    axes.tick_params(which="minor", length=0)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
