"""Plotly figures from lfcore's result objects (no computation: every number comes from the caller).

Each function takes results as lfcore returns them (an ``Activations`` for labels, a similarity map, a
``metrics.layerwise`` frame, ``KeyRegions`` tables, a deactivation table, a series table) and returns a
``plotly.graph_objects.Figure``. Arrays go in as rounded Python lists, so a figure's JSON holds plain
numbers. ``mimebundle`` shows a figure both ways: plotly's own mime type (interactive in JupyterLab and
VS Code) and a ``text/html`` div that an HTML report renders with the plotly.js it embeds once.
"""
from __future__ import annotations

import html
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .core import FULL_COLUMN, KEY_NUMBER, KEY_PERCENT

TEMPLATE = "plotly_white"
_COUNT_HOVER = "%{fullData.name}, layer %{x}: %{y:,} key neurons<extra></extra>"
LRDS_COLOR, SADS_COLOR, THIRD_COLOR = "#d62728", "#1f77b4", "#2ca02c"


def _list(values, digits: int = 4) -> list:
    """A tensor/array/sequence as a (nested) list of floats rounded for display."""
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)
    return np.round(arr, digits).tolist()


def _row_labels(acts, corpus=None, max_chars: int = 70) -> list[str]:
    """'en · id · sentence…' per row of ``acts``: unique (id, language) labels that carry the hover text."""
    labels = []
    for sid, lang in zip(acts.sentence_ids, acts.langs):
        text = ""
        if corpus is not None:
            t = corpus.text(sid, lang)
            text = " · " + html.escape(t if len(t) <= max_chars else t[:max_chars - 1] + "…")
        labels.append(f"{lang} · {sid}{text}")
    return labels


def _block_ticks(acts, labels: list[str]) -> tuple[list[str], list[str]]:
    """One tick per language block (at its middle row): (tick values, language codes)."""
    rows: dict[str, list[int]] = {}
    for r, lang in enumerate(acts.langs):
        rows.setdefault(lang, []).append(r)
    return [labels[r[len(r) // 2]] for r in rows.values()], list(rows)


def _heatmap(s, labels, name: str | None = None, colorscale: str = "Viridis", **kw) -> go.Heatmap:
    return go.Heatmap(z=_list(s, 3), x=labels, y=labels, colorscale=colorscale, name=name,
                      colorbar=dict(title="cosine"),
                      hovertemplate="row: %{y}<br>column: %{x}<br>similarity %{z:.3f}<extra></extra>", **kw)


def _square_axes(fig: go.Figure, ticks, text, **kw) -> None:
    axis = dict(tickmode="array", tickvals=ticks, ticktext=text, showgrid=False, type="category")
    fig.update_xaxes(**axis, **kw)
    fig.update_yaxes(**axis, autorange="reversed", scaleanchor="x", **kw)


def similarity_map(s, acts, corpus=None, title: str = "Similarity map") -> go.Figure:
    """Figure 2: the cosine similarity map of ``acts`` rows (``metrics.ordered`` gives the paper's layout).

    s: (n, n) map in the row order of ``acts`` (an ``Activations`` or anything with ``sentence_ids`` and
    ``langs``, e.g. ``series.Rows``); ``corpus`` (optional) supplies the sentence shown on hover.
    Hover shows language, sentence id and sentence of the row and the column, and the similarity.
    """
    labels = _row_labels(acts, corpus)
    fig = go.Figure(_heatmap(s, labels))
    _square_axes(fig, *_block_ticks(acts, labels))
    fig.update_layout(title=title, template=TEMPLATE, height=720, width=800,
                      xaxis_title="sentence (language blocks, same ids in the same order)", yaxis_title="sentence")
    return fig


def similarity_maps(maps: Sequence, acts_list: Sequence, titles: Sequence[str], corpus=None,
                    title: str = "Similarity maps") -> go.Figure:
    """Figure 8: one similarity map per model, side by side (maps[k] in the row order of acts_list[k])."""
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=list(titles), horizontal_spacing=0.06)
    for k, (s, acts) in enumerate(zip(maps, acts_list), start=1):
        labels = _row_labels(acts, corpus)
        fig.add_trace(_heatmap(s, labels, name=titles[k - 1], coloraxis="coloraxis"), row=1, col=k)
        ticks, text = _block_ticks(acts, labels)
        axis = dict(tickmode="array", tickvals=ticks, ticktext=text, showgrid=False, type="category")
        fig.update_xaxes(**axis, row=1, col=k)
        fig.update_yaxes(**axis, autorange="reversed", row=1, col=k)
    fig.update_layout(title=title, template=TEMPLATE, height=460, width=430 * len(maps) + 80,
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="cosine")))
    return fig


def layer_similarity_slider(maps, acts, corpus=None, title: str = "Similarity map per layer") -> go.Figure:
    """Each layer's own similarity map, one slider step per layer (works in static HTML).

    maps: (n_layers, n, n) from ``metrics.layer_maps(acts)``, block b being model layer ``acts.layers[b]``.
    """
    labels = _row_labels(acts, corpus, max_chars=50)
    fig = go.Figure()
    for b, layer in enumerate(acts.layers):
        fig.add_trace(_heatmap(maps[b], labels, name=f"layer {layer}", visible=b == 0))
    steps = [dict(method="update", label=str(layer),
                  args=[{"visible": [k == b for k in range(len(acts.layers))]},
                        {"title": {"text": f"{title}: layer {layer}"}}]) for b, layer in enumerate(acts.layers)]
    _square_axes(fig, *_block_ticks(acts, labels))
    fig.update_layout(title=f"{title}: layer {acts.layers[0]}", template=TEMPLATE, height=700, width=760,
                      sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="layer "), pad=dict(t=40))])
    return fig


def _band(fig, x, low, high, color, name):
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=_list(high) + _list(low)[::-1], fill="toself",
                             fillcolor=color, opacity=0.18, line=dict(width=0), hoverinfo="skip",
                             name=f"{name} interval", showlegend=False))


def layer_scores(layerwise: pd.DataFrame, intervals: pd.DataFrame | None = None,
                 flagged: Sequence[int] = (), title: str = "Layer-wise LRDS and SADS") -> go.Figure:
    """Figure 3/9: LRDS and SADS per layer (``metrics.layerwise``), with bootstrap bands if given.

    intervals: ``uncertainty.score_intervals`` rows (metric, layer, ci_low, ci_high); the "all" rows are
    ignored. flagged: layers marked by diagnostics (e.g. massive activations), drawn as grey columns.
    """
    fig = go.Figure()
    for metric, color in (("lrds", LRDS_COLOR), ("sads", SADS_COLOR)):
        if intervals is not None:
            ci = intervals[(intervals.metric == metric) & (intervals.layer != "all")]
            ci = ci.assign(layer=ci.layer.astype(int)).set_index("layer").loc[list(layerwise.layer)]
            _band(fig, layerwise.layer, ci.ci_low, ci.ci_high, color, metric.upper())
        fig.add_trace(go.Scatter(x=list(layerwise.layer), y=_list(layerwise[metric]), mode="lines+markers",
                                 name=metric.upper(), line=dict(color=color),
                                 hovertemplate=f"layer %{{x}}<br>{metric.upper()} %{{y:.4f}}<extra></extra>"))
    for layer in flagged:
        fig.add_vrect(x0=layer - 0.5, x1=layer + 0.5, fillcolor="grey", opacity=0.2, line_width=0,
                      annotation_text="flagged", annotation_position="top left")
    fig.update_layout(title=title, template=TEMPLATE, xaxis_title="layer", yaxis_title="score",
                      height=420, legend=dict(orientation="h", y=1.08))
    return fig


def headline_scores(intervals: pd.DataFrame, title: str = "LRDS and SADS (whole model)") -> go.Figure:
    """The headline scores with their intervals: the "all" rows of ``uncertainty.score_intervals``."""
    overall = intervals[intervals.layer == "all"]
    fig = go.Figure(go.Scatter(
        x=[m.upper() for m in overall.metric], y=_list(overall.estimate), mode="markers",
        marker=dict(size=12, color=[LRDS_COLOR if m == "lrds" else SADS_COLOR for m in overall.metric]),
        error_y=dict(type="data", symmetric=False, array=_list(overall.ci_high - overall.estimate),
                     arrayminus=_list(overall.estimate - overall.ci_low)),
        customdata=_list(overall[["ci_low", "ci_high", "p_value"]].to_numpy(), 5),
        hovertemplate="%{x} %{y:.4f}<br>interval [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                      "<br>permutation p %{customdata[2]:.4f}<extra></extra>"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, template=TEMPLATE, height=360, width=420, yaxis_title="score", showlegend=False)
    return fig


def key_regions_per_layer(per_layer: pd.DataFrame, title: str = "Key neurons per layer") -> go.Figure:
    """Figure 5 for one model: stacked key-neuron counts per layer (``KeyRegions.per_layer()``)."""
    fig = go.Figure([go.Bar(x=list(per_layer.index), y=per_layer[lang].tolist(), name=lang, hovertemplate=_COUNT_HOVER)
                     for lang in per_layer])
    fig.update_layout(barmode="stack", title=title, template=TEMPLATE, xaxis_title="layer",
                      yaxis_title="key neurons", height=420)
    return fig


def key_regions_threshold_slider(regions, thresholds: Sequence[float],
                                 title: str = "Key neurons per layer by z threshold") -> go.Figure:
    """Stacked key neurons per layer (``KeyRegions.with_threshold(t).per_layer()``), one slider step per
    threshold; works in static HTML."""
    thresholds = list(thresholds)
    tables = [regions.with_threshold(t).per_layer() for t in thresholds]
    langs = list(tables[0].columns)
    fig = go.Figure()
    for k, df in enumerate(tables):
        for lang in langs:
            fig.add_trace(go.Bar(x=list(df.index), y=df[lang].tolist(), name=lang, legendgroup=lang,
                                 visible=k == 0, hovertemplate=_COUNT_HOVER))  # a hidden step lists no legend
    sklr = [int(df.to_numpy().sum()) for df in tables]
    steps = [dict(method="update", label=f"{t:g}",
                  args=[{"visible": [j // len(langs) == k for j in range(len(thresholds) * len(langs))]},
                        {"title": {"text": f"{title}: z > {t:g} (SKLR {sklr[k]:,})"}}])
             for k, t in enumerate(thresholds)]
    fig.update_layout(barmode="stack", title=f"{title}: z > {thresholds[0]:g} (SKLR {sklr[0]:,})", template=TEMPLATE,
                      height=460, xaxis_title="layer", yaxis_title="key neurons", legend=dict(orientation="h", y=1.1),
                      sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="z threshold "), pad=dict(t=40))])
    return fig


def key_region_sizes(sizes: pd.Series | pd.DataFrame, title: str = "Key neurons per language") -> go.Figure:
    """Figure 6/11: key-region size per language; a DataFrame (columns = checkpoints/models) gives groups."""
    frame = sizes.to_frame() if isinstance(sizes, pd.Series) else sizes
    fig = go.Figure([go.Bar(x=list(frame.index), y=frame[c].tolist(), name=str(c)) for c in frame.columns])
    fig.update_layout(title=title, template=TEMPLATE, barmode="group", xaxis_title="language",
                      yaxis_title="key neurons", height=400, showlegend=len(frame.columns) > 1)
    return fig


def deactivation_heatmap(table: pd.DataFrame, intervals: pd.DataFrame | None = None,
                         title: str = "Perplexity increase (%) after deactivation", diverging: bool = False,
                         x_title: str = "deactivated key region") -> go.Figure:
    """Table 1/4 as a heatmap: rows = evaluated language, columns = deactivated set, cells = % increase.

    table: ``evaluate.deactivation_table``; intervals: ``uncertainty.deactivation_intervals`` (hover).
    Increases span orders of magnitude (a few % off the diagonal, tens of thousands % on it), so the colour is
    log10(1 + increase) with the colour bar labelled in %, and a decrease is drawn as 0; the printed numbers
    and the hover are the raw percentages. ``diverging``: a red-blue scale centred on 0 (stopping at the 95th
    percentile of |change|), for sets that can lower perplexity too (steered regions).
    """

    cells = table.drop(index=[KEY_NUMBER, KEY_PERCENT], errors="ignore").drop(columns=[FULL_COLUMN])
    raw = cells.to_numpy(dtype=float)
    text = [[f"{v:,.0f}%" for v in row] for row in raw]
    hover = [[f"×{c} on {r}: {v:+,.1f}%" for c, v in zip(cells.columns, row)]
             for r, row in zip(cells.index, cells.to_numpy())]
    if intervals is not None:
        ci = intervals.set_index(["lang", "condition"])
        hover = [[h + (f"<br>interval [{ci.loc[(r, c), 'ci_low']:+,.1f}%, {ci.loc[(r, c), 'ci_high']:+,.1f}%]"
                       if (r, c) in ci.index else "") for h, c in zip(row, cells.columns)]
                 for r, row in zip(cells.index, hover)]
    if diverging:
        top = float(np.nanpercentile(np.abs(raw), 95)) or None
        fig = go.Figure(go.Heatmap(z=_list(raw, 2), x=list(cells.columns), y=list(cells.index), text=text,
                                   texttemplate="%{text}", hovertext=hover, hoverinfo="text", colorscale="RdBu_r",
                                   zmid=0, zmin=-top if top else None, zmax=top, colorbar=dict(title="% change")))
    else:
        top = max(1.0, float(np.nanmax(raw)) if np.isfinite(raw).any() else 1.0)
        ticks = [t for t in (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000) if t <= top]
        fig = go.Figure(go.Heatmap(z=_list(np.log10(1 + np.clip(raw, 0, None)), 4), x=[f"×{c}" for c in cells.columns],
                                   y=list(cells.index), text=text, texttemplate="%{text}", hovertext=hover,
                                   hoverinfo="text", colorscale="Reds", zmin=0, zmax=float(np.log10(1 + top)),
                                   colorbar=dict(title="% increase (log)",
                                                 tickvals=_list(np.log10(1 + np.array(ticks)), 4),
                                                 ticktext=[f"{t:,}%" for t in ticks])))
    fig.update_yaxes(autorange="reversed", title="evaluated language")
    fig.update_layout(title=title, template=TEMPLATE, xaxis_title=x_title, height=460)
    return fig


def switch_matrix(matrix: pd.DataFrame, title: str = "Continuations detected as the steered language") -> go.Figure:
    """Heatmap of shares: rows = prompt language, columns = steered (target) language (``steps.switch_matrix``)."""
    z = matrix.to_numpy(dtype=float)
    text = [["" if np.isnan(v) else f"{100 * v:.0f}%" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=_list(z, 3), x=list(matrix.columns), y=list(matrix.index), text=text,
                               texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate="prompt %{y}, steered to %{x}: %{z:.0%}<extra></extra>",
                               colorbar=dict(title="share")))
    fig.update_yaxes(autorange="reversed", title="prompt language")
    fig.update_layout(title=title, template=TEMPLATE, xaxis_title="steered language", height=460)
    return fig


def _error_y(df: pd.DataFrame) -> dict:
    return dict(type="data", symmetric=False, array=_list(df.ci_high - df.share, 3),
                arrayminus=_list(df.share - df.ci_low, 3))


def dose_response(shares: pd.DataFrame, title: str = "Switch rate against steering strength") -> go.Figure:
    """One panel per target language: share of other-language prompts detected as the target against the
    strength, for the region and its size-matched random control (``uncertainty.share_intervals`` rows with
    target, kind, strength; bars: intervals), and the plain model's share as a dotted line."""
    targets = [t for t in shares.target.unique() if t is not None]
    cols = min(3, len(targets))
    rows = -(-len(targets) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"steered to {t}" for t in targets], shared_yaxes=True)
    for k, t in enumerate(targets):
        r, c = k // cols + 1, k % cols + 1
        for kind, color in (("region", LRDS_COLOR), ("random", "grey")):
            d = shares[(shares.target == t) & (shares.kind == kind)].sort_values("strength")
            fig.add_trace(go.Scatter(x=_list(d.strength), y=_list(d.share, 3), error_y=_error_y(d), name=kind,
                                     mode="lines+markers", line=dict(color=color), legendgroup=kind,
                                     showlegend=k == 0), row=r, col=c)
        plain = shares[(shares.target == t) & (shares.kind == "none")]
        if len(plain):
            fig.add_hline(y=float(plain.share.iloc[0]), line_dash="dot", line_color="black", row=r, col=c)
    fig.update_xaxes(type="log", title_text="strength (x mean activation)", row=rows)
    fig.update_yaxes(range=[-0.02, 1.02], col=1, title_text="share")
    fig.update_layout(title=title, template=TEMPLATE, height=260 * rows + 80, legend=dict(orientation="h", y=1.1))
    return fig


def patch_bands(shares: pd.DataFrame, title: str = "Patching: which layers carry the switch") -> go.Figure:
    """Grouped bars per target language: share of other-language prompts detected as the target with the whole
    region patched, each band of its layers alone, and the random control (rows with target, kind, band)."""
    fig = go.Figure()
    for (kind, band), d in shares.groupby(["kind", "band"], sort=False):
        name = "random (all layers)" if kind == "random" else f"region, {band}"
        fig.add_trace(go.Bar(x=list(d.target), y=_list(d.share, 3), error_y=_error_y(d), name=name,
                             marker_color="grey" if kind == "random" else None))
    fig.update_layout(title=title, template=TEMPLATE, barmode="group", xaxis_title="patched-in language",
                      yaxis_title="share", yaxis_range=[0, 1.02], height=420)
    return fig


def sweep(sweep: pd.DataFrame, chosen: float | None = None,
                    title: str = "Key-region size against the z threshold") -> go.Figure:
    """``robustness.threshold_sweep``: key neurons per language (solid, left) and SKLR (dashed, right)
    against the threshold; ``chosen`` marks the threshold in use."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for lang, df in sweep.groupby("lang", sort=False):
        fig.add_trace(go.Scatter(x=_list(df.threshold, 3), y=df.key_neurons.tolist(), name=lang, mode="lines",
                                 customdata=_list(df.percent, 3),
                                 hovertemplate=f"{lang}: z > %{{x}}<br>%{{y}} key neurons (%{{customdata}}%)"
                                               "<extra></extra>"), secondary_y=False)
    total = sweep.drop_duplicates("threshold")
    fig.add_trace(go.Scatter(x=_list(total.threshold, 3), y=total.sklr.tolist(), name="SKLR", mode="lines",
                             line=dict(color="black", dash="dash")), secondary_y=True)
    if chosen is not None:
        fig.add_vline(x=chosen, line_dash="dot", line_color="grey", annotation_text=f"z = {chosen:g}")
    fig.update_xaxes(title="z threshold")
    fig.update_yaxes(title="key neurons per language", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title="SKLR (all languages)", rangemode="tozero", secondary_y=True, showgrid=False)
    fig.update_layout(title=title, template=TEMPLATE, height=420)
    return fig


def stability(table: pd.DataFrame, title: str = "Key-region overlap between disjoint halves") -> go.Figure:
    """``robustness.stability_halves``: Jaccard overlap per language, one point per random split."""
    fig = go.Figure(go.Box(x=table.lang.tolist(), y=_list(table.jaccard), boxpoints="all", jitter=0.3,
                           pointpos=0, customdata=table.seed.tolist(), name="Jaccard",
                           hovertemplate="%{x}, split seed %{customdata}: Jaccard %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, template=TEMPLATE, yaxis_range=[0, 1], xaxis_title="language",
                      yaxis_title="Jaccard (1 = the same neurons)", height=380, showlegend=False)
    return fig


def exclusion(table: pd.DataFrame, k: int, title: str = "Dominant neurons per layer") -> go.Figure:
    """``diagnostics.exclusion_table``: layer-wise LRDS/SADS with all neurons (solid) and with each layer's k
    dominant neurons zeroed (dashed), and the top-k share of the squared norm (bars, right axis)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=table.layer.tolist(), y=_list(table[f"top{k}_share"]), name=f"top-{k} share",
                         marker_color=["#999" if d else "#ddd" for d in table.dominant], opacity=0.6),
                  secondary_y=True)
    for metric, color in (("lrds", LRDS_COLOR), ("sads", SADS_COLOR)):
        fig.add_trace(go.Scatter(x=table.layer.tolist(), y=_list(table[metric]), name=metric.upper(),
                                 line=dict(color=color)), secondary_y=False)
        fig.add_trace(go.Scatter(x=table.layer.tolist(), y=_list(table[f"{metric}_excluded"]),
                                 name=f"{metric.upper()} without top-{k}", line=dict(color=color, dash="dash")),
                      secondary_y=False)
    fig.update_xaxes(title="layer")
    fig.update_yaxes(title="score", secondary_y=False)
    fig.update_yaxes(title=f"share of squared norm in the top {k} neurons", range=[0, 1], secondary_y=True,
                     showgrid=False)
    fig.update_layout(title=title, template=TEMPLATE, height=420, legend=dict(orientation="h", y=1.12))
    return fig


def pooling(table: pd.DataFrame, names: Sequence[str] = ("all_tokens", "skip_first"),
            title: str = "First-token effect") -> go.Figure:
    """``diagnostics.compare_pooling``: layer-wise LRDS and SADS under two poolings (solid vs dashed)."""
    fig = go.Figure()
    for metric, color in (("lrds", LRDS_COLOR), ("sads", SADS_COLOR)):
        for name, dash in zip(names, ("solid", "dash")):
            fig.add_trace(go.Scatter(x=table.layer.tolist(), y=_list(table[f"{metric}_{name}"]),
                                     name=f"{metric.upper()} ({name})", line=dict(color=color, dash=dash)))
    fig.update_layout(title=title, template=TEMPLATE, xaxis_title="layer", yaxis_title="score", height=400)
    return fig


def series(table: pd.DataFrame, x: str, left: Sequence[str], right: Sequence[str] = (),
           errors: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None, log_x: bool = False,
           hover: str | None = None, title: str = "") -> go.Figure:
    """Figures 4, 7 and 10: metrics of a checkpoint or size series against ``x``, two y axes.

    ``errors`` maps a column to its standard-error column (symmetric error bars) or to a pair of interval
    columns ``(low, high)`` (asymmetric bars); ``labels`` renames axes; ``hover`` names a column (e.g. the
    model label) shown on hover.
    """
    errors, labels = dict(errors or {}), dict(labels or {})
    fig = make_subplots(specs=[[{"secondary_y": bool(right)}]])
    colors = iter([LRDS_COLOR, SADS_COLOR, THIRD_COLOR, "#9467bd", "#8c564b"])
    xs = table[x].tolist()
    extra = table[hover].astype(str).tolist() if hover else None
    for cols, secondary in ((left, False), (right, True)):
        for c in cols:
            err = None
            if c in errors and isinstance(errors[c], str):
                err = dict(type="data", array=_list(table[errors[c]]), visible=True)
            elif c in errors:
                low, high = errors[c]
                err = dict(type="data", symmetric=False, array=_list(table[high] - table[c]),
                           arrayminus=_list(table[c] - table[low]), visible=True)
            fig.add_trace(go.Scatter(x=xs, y=_list(table[c]), name=labels.get(c, c), mode="lines+markers",
                                     line=dict(color=next(colors), dash="dash" if secondary else "solid"),
                                     error_y=err, customdata=extra,
                                     hovertemplate=(("%{customdata}<br>" if hover else "") +
                                                    f"{labels.get(x, x)} %{{x}}<br>{labels.get(c, c)} %{{y:.4f}}"
                                                    "<extra></extra>")),
                          secondary_y=secondary)
    fig.update_xaxes(title=labels.get(x, x), type="log" if log_x else None)
    fig.update_yaxes(title=" / ".join(labels.get(c, c) for c in left), secondary_y=False)
    if right:
        fig.update_yaxes(title=" / ".join(labels.get(c, c) for c in right), secondary_y=True, showgrid=False)
    fig.update_layout(title=title, template=TEMPLATE, height=420, legend=dict(orientation="h", y=1.1))
    return fig


def by_layer(table: pd.DataFrame, y_title: str, title: str = "") -> go.Figure:
    """One line per column against the layer (the index): e.g. ``series.series_per_layer`` (Figure 5) or
    ``series.series_layerwise`` (a layer-wise score for each model of a series)."""
    fig = go.Figure([go.Scatter(x=list(table.index), y=_list(table[c]), mode="lines+markers", name=str(c),
                                hovertemplate=f"{c}<br>layer %{{x}}<br>{y_title} %{{y:.4g}}<extra></extra>")
                     for c in table.columns])
    fig.update_layout(title=title, template=TEMPLATE, xaxis_title="layer", yaxis_title=y_title, height=420)
    return fig


def accuracy_bars(acc: pd.DataFrame, group: str | None = None, title: str = "Cross-lingual accuracy") -> go.Figure:
    """Accuracy per language with the standard error as error bars (``evaluate.crosslingual_accuracy``).

    ``group`` names a column (e.g. checkpoint or model) that splits the bars into groups.
    """
    groups = [(None, acc)] if group is None else list(acc.groupby(group, sort=False))
    fig = go.Figure([go.Bar(x=list(df.lang), y=_list(df.acc), name=str(g) if g is not None else "accuracy",
                            error_y=dict(type="data", array=_list(df.acc_stderr), visible=True),
                            customdata=df.n.tolist(),
                            hovertemplate="%{x}: %{y:.3f} ± %{error_y.array:.3f} (n=%{customdata})<extra></extra>")
                     for g, df in groups])
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    fig.update_layout(title=title, template=TEMPLATE, barmode="group", xaxis_title="language of the premise/story",
                      yaxis_title="accuracy", yaxis_range=[0, 1], height=400, showlegend=group is not None)
    return fig


def mimebundle(fig: go.Figure, plotlyjs: bool = False) -> dict:
    """Display data for a figure: plotly's JSON mime type plus an HTML div (with plotly.js if ``plotlyjs``).

    JupyterLab and VS Code render the JSON interactively; nbconvert's HTML export uses the div, which needs
    ``window.Plotly``: ``Report.show`` embeds plotly.js (offline, ~4.8 MB) in a notebook's first figure only.
    """
    div = pio.to_html(fig, full_html=False, include_plotlyjs=plotlyjs, include_mathjax=False,
                      default_width="100%", validate=False, config={"responsive": True})
    return {"application/vnd.plotly.v1+json": fig.to_plotly_json(), "text/html": div}
