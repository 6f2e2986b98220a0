"""Checkpoint, size and family series: measure each model in turn, release it, and tabulate the results;
warn when two entries of a series have identical weights."""
from __future__ import annotations

import gc
import warnings
from collections import namedtuple
from dataclasses import dataclass

import pandas as pd

from .cache import Cache
from .metrics import layerwise, ordered, scores, similarity
from .regions import key_regions
from .report import Report
from .specs import AccuracySpec, CaptureSpec, ModelSpec, UncertaintySpec
from .steps import activations, intervals, label, load, task_accuracy

Rows = namedtuple("Rows", ["sentence_ids", "langs"])  # row labels of a similarity map (what plots needs)


class IdenticalCheckpointsWarning(UserWarning):
    """Two entries of a series have the same weight fingerprint."""


def check_fingerprints(metas: list[dict]) -> list[str]:
    """Messages for entries of a series whose weights are identical (same fingerprint)."""
    seen, messages = {}, []
    for m in metas:
        name = f"{m['model']}@{m['revision'] or 'main'}"
        if m["fingerprint"] in seen:
            messages.append(f"{seen[m['fingerprint']]} and {name} have identical weights (fingerprint "
                            f"{m['fingerprint']}): the series repeats a checkpoint")
        seen.setdefault(m["fingerprint"], name)
    return messages


@dataclass
class SeriesPoint:
    """Results for one model of a series (the model and its activations are released after measuring).
    ``map``/``map_rows``: the similarity map of the first ``map_sentences`` ids, language-major."""

    spec: ModelSpec
    meta: dict
    n_params: int
    scores: dict
    layerwise: pd.DataFrame
    regions: object  # KeyRegions
    accuracy: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None  # whole-model LRDS/SADS intervals (``steps.intervals``)
    map: object = None  # (rows, rows) tensor
    map_rows: Rows | None = None


def run_series(models: list[ModelSpec], corpus, capture: CaptureSpec, threshold: float, cache: Cache,
               accuracy_cfg: AccuracySpec | None = None, report: Report | None = None,
               map_sentences: int = 0, uncertainty: UncertaintySpec | None = None,
               epsilon: float = 0.0) -> list[SeriesPoint]:
    """Load each model in turn, measure it (LRDS/SADS overall and per layer, key regions with ``threshold`` and
    ``epsilon`` as in ``regions.key_regions``; optionally accuracy, whole-model score intervals and a small
    similarity map), release it, and warn if two entries have identical weights."""
    points = []
    for m in models:
        lm = load(m)
        if report is not None:
            report.model(lm.meta())
        acts = activations(lm, corpus, capture, cache)
        acc = task_accuracy(lm, accuracy_cfg, cache) if accuracy_cfg else None
        n_params = m.params or sum(p.numel() for p in lm.model.parameters())
        point = SeriesPoint(m, lm.meta(), int(n_params), scores(acts), layerwise(acts),
                            key_regions(acts, threshold, epsilon), acc)
        if uncertainty is not None:
            point.intervals = intervals(acts, uncertainty, cache, per_layer=False)
        if map_sentences:
            shown = ordered(acts.select(ids=acts.ids[:map_sentences]))
            point.map, point.map_rows = similarity(shown), Rows(shown.sentence_ids, shown.langs)
        points.append(point)
        del lm, acts
        gc.collect()
    for msg in check_fingerprints([p.meta for p in points]):
        (report.warn if report is not None else warnings.warn)(msg, IdenticalCheckpointsWarning)
    return points


def language_mean(accuracy: pd.DataFrame) -> tuple[float, float]:
    """Accuracy over languages as lm-eval's group score (what the authors' run.py reports for ``xstorycloze``): the
    mean weighted by item count ``n``, and that mean's standard error (languages independent).
    ``language_mean(crosslingual_accuracy(lm, langs, "xstorycloze_xl"))`` -> (acc, se)."""
    w = accuracy.n / accuracy.n.sum()  # (languages,)
    return float((w * accuracy.acc).sum()), float(((w * accuracy.acc_stderr) ** 2).sum() ** 0.5)


def series_table(points: list[SeriesPoint]) -> pd.DataFrame:
    """One row per model: label, step, params, revision, fingerprint, LRDS, SADS (with ``*_ci_low``/``*_ci_high``
    when measured with intervals), SKLR, and the accuracy over languages with its standard error (``language_mean``)."""
    rows = []
    for i, p in enumerate(points):
        row = {"label": label(p.spec), "step": p.spec.step if p.spec.step is not None else i, "params": p.n_params,
               "revision": p.meta["revision"], "fingerprint": p.meta["fingerprint"], **p.scores,
               "sklr": p.regions.sklr, "sklr_percent": 100 * p.regions.sklr / p.regions.total_neurons}
        if p.intervals is not None:
            for metric, r in p.intervals[p.intervals.layer.astype(str) == "all"].set_index("metric").iterrows():
                row.update({f"{metric}_ci_low": r.ci_low, f"{metric}_ci_high": r.ci_high, f"{metric}_p": r.p_value})
        if p.accuracy is not None:
            row["acc"], row["acc_stderr"] = language_mean(p.accuracy)
        rows.append(row)
    return pd.DataFrame(rows)


def series_numbers(table: pd.DataFrame, columns: list[str]) -> dict:
    """Headline numbers of a series table: {COLUMN: {model label: value}}, with the bootstrap interval where the
    table has one (``*_ci_low``/``*_ci_high``) and a normal 95% interval (±1.96 se) for the accuracy."""
    def number(row, c):
        v = row[c].item() if hasattr(row[c], "item") else row[c]
        if f"{c}_ci_low" in table:
            return {"estimate": v, "ci": [float(row[f"{c}_ci_low"]), float(row[f"{c}_ci_high"])]}
        if f"{c}_stderr" in table:
            se = float(row[f"{c}_stderr"])
            return {"estimate": v, "ci": [v - 1.96 * se, v + 1.96 * se]}
        return v

    return {c.upper(): {row["label"]: number(row, c) for _, row in table.iterrows()} for c in columns}


def series_per_layer(points: list[SeriesPoint]) -> pd.DataFrame:
    """Key neurons per layer (summed over languages): rows = layers, one column per model (Figure 5)."""
    return pd.DataFrame({label(p.spec): p.regions.per_layer().sum(axis=1) for p in points})


def series_layerwise(points: list[SeriesPoint], metric: str = "lrds") -> pd.DataFrame:
    """A layer-wise score (``"lrds"`` or ``"sads"``): rows = layers, one column per model."""
    return pd.DataFrame({label(p.spec): p.layerwise.set_index("layer")[metric] for p in points})


def series_maps(points: list[SeriesPoint]) -> tuple[list, list[Rows], list[str]]:
    """(maps, row labels, model labels) of a series run with ``map_sentences``: ``plots.similarity_maps`` input."""
    return [p.map for p in points], [p.map_rows for p in points], [label(p.spec) for p in points]


def series_sizes(points: list[SeriesPoint]) -> pd.DataFrame:
    """Key-region size per language: rows = languages, one column per model (Figures 6 and 11)."""
    return pd.DataFrame({label(p.spec): p.regions.sizes() for p in points})


def series_accuracy(points: list[SeriesPoint]) -> pd.DataFrame:
    """Accuracy rows of every model, with a ``model`` column."""
    return pd.concat([p.accuracy.assign(model=label(p.spec)) for p in points if p.accuracy is not None],
                     ignore_index=True)
