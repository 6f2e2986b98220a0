"""Plotly figures from lfcore's result objects (no computation: every number comes from the caller). Arrays go in
as rounded lists, so a figure's JSON holds plain numbers; ``mimebundle`` shows a figure interactive and as HTML."""
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
COLORS = {"lrds": "#d62728", "sads": "#1f77b4"}
_COUNT_HOVER = "%{fullData.name}, layer %{x}: %{y:,} key neurons<extra></extra>"


def _list(values, digits: int = 4) -> list:
    """A tensor/array/sequence as a (nested) list of floats rounded for display."""
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)
    return np.round(arr, digits).tolist()


def _error_y(mid, low, high, digits: int = 3, **kw) -> dict:
    """Asymmetric error bars for the interval (low, high) around ``mid``."""
    return dict(type="data", symmetric=False, array=_list(high - mid, digits), arrayminus=_list(mid - low, digits),
                **kw)


def _row_labels(acts, corpus=None, max_chars: int = 70) -> list[str]:
    """'en · id · sentence…' per row of ``acts``: unique (id, language) labels that carry the hover text."""
    def text(sid, lang) -> str:
        t = corpus.text(sid, lang)
        return " · " + html.escape(t if len(t) <= max_chars else t[:max_chars - 1] + "…")

    return [f"{lang} · {sid}{text(sid, lang) if corpus is not None else ''}"
            for sid, lang in zip(acts.sentence_ids, acts.langs)]


def _block_axes(fig: go.Figure, acts, labels: list[str], square: bool = True, **kw) -> None:
    """Category axes ticked once per language block (at its middle row), rows top-down."""
    middle = pd.Series(labels).groupby(list(acts.langs), sort=False).agg(lambda block: block.iloc[len(block) // 2])
    axis = dict(tickmode="array", tickvals=list(middle), ticktext=list(middle.index), showgrid=False, type="category",
                **kw)
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis, autorange="reversed", **(dict(scaleanchor="x") if square else {}))


def _heatmap(s, labels, **kw) -> go.Heatmap:
    return go.Heatmap(z=_list(s, 3), x=labels, y=labels, colorscale="Viridis", colorbar=dict(title="cosine"),
                      hovertemplate="row: %{y}<br>column: %{x}<br>similarity %{z:.3f}<extra></extra>", **kw)


def _slider(fig: go.Figure, labels: list[str], titles: list[str], prefix: str, **layout) -> go.Figure:
    """One slider step per label showing its equal share of ``fig.data`` and its title (works in static HTML)."""
    per_step = len(fig.data) // len(labels)
    steps = [dict(method="update", label=label, args=[{"visible": [j // per_step == k for j in range(len(fig.data))]},
                                                      {"title": {"text": text}}])  # plotly.js 3+ needs the dict
             for k, (label, text) in enumerate(zip(labels, titles))]
    return fig.update_layout(title=titles[0], template=TEMPLATE, **layout, sliders=[
        dict(active=0, steps=steps, currentvalue=dict(prefix=prefix), pad=dict(t=40))])


def similarity_map(s, acts, corpus=None, title: str = "Similarity map") -> go.Figure:
    """Figure 2: the cosine similarity map of ``acts`` rows (``metrics.ordered`` gives the paper's layout). s: (n, n)
    map in the row order of ``acts`` (an ``Activations`` or anything with ``sentence_ids`` and ``langs``, e.g.
    ``series.Rows``). Hover: language, sentence id (and sentence, from ``corpus``) of row and column."""
    labels = _row_labels(acts, corpus)
    fig = go.Figure(_heatmap(s, labels))
    _block_axes(fig, acts, labels)
    return fig.update_layout(title=title, template=TEMPLATE, height=720, width=800, yaxis_title="sentence",
                             xaxis_title="sentence (language blocks, same ids in the same order)")


def similarity_maps(maps: Sequence, acts_list: Sequence, titles: Sequence[str], corpus=None,
                    title: str = "Similarity maps") -> go.Figure:
    """Figure 8: one similarity map per model, side by side (maps[k] in the row order of acts_list[k])."""
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=list(titles), horizontal_spacing=0.06)
    for k, (s, acts, name) in enumerate(zip(maps, acts_list, titles), start=1):
        labels = _row_labels(acts, corpus)
        fig.add_trace(_heatmap(s, labels, name=name, coloraxis="coloraxis"), row=1, col=k)
        _block_axes(fig, acts, labels, square=False, row=1, col=k)
    return fig.update_layout(title=title, template=TEMPLATE, height=460, width=430 * len(maps) + 80,
                             coloraxis=dict(colorscale="Viridis", colorbar=dict(title="cosine")))


def layer_similarity_slider(maps, acts, corpus=None, title: str = "Similarity map per layer") -> go.Figure:
    """Each layer's own similarity map, one slider step per layer (works in static HTML). maps: (n_layers, n, n)
    from ``metrics.layer_maps(acts)``, block b being model layer ``acts.layers[b]``."""
    labels = _row_labels(acts, corpus, max_chars=50)
    fig = go.Figure([_heatmap(m, labels, name=f"layer {layer}", visible=b == 0)
                     for b, (m, layer) in enumerate(zip(maps, acts.layers))])
    _block_axes(fig, acts, labels)
    return _slider(fig, [str(layer) for layer in acts.layers], [f"{title}: layer {layer}" for layer in acts.layers],
                   "layer ", height=700, width=760)


def layer_scores(layerwise: pd.DataFrame, intervals: pd.DataFrame | None = None,
                 flagged: Sequence[int] = (), title: str = "Layer-wise LRDS and SADS") -> go.Figure:
    """Figure 3/9: LRDS and SADS per layer (``metrics.layerwise``), with bootstrap bands if given.

    intervals: ``uncertainty.score_intervals`` rows (metric, layer, ci_low, ci_high); the "all" rows are
    ignored. flagged: layers marked by diagnostics (e.g. massive activations), drawn as grey columns.
    """
    fig, x = go.Figure(), list(layerwise.layer)
    for metric, color in COLORS.items():
        if intervals is not None:
            ci = intervals[(intervals.metric == metric) & (intervals.layer != "all")]
            ci = ci.assign(layer=ci.layer.astype(int)).set_index("layer").loc[x]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=_list(ci.ci_high) + _list(ci.ci_low)[::-1], fill="toself",
                                     fillcolor=color, opacity=0.18, line=dict(width=0), hoverinfo="skip",
                                     name=f"{metric.upper()} interval", showlegend=False))
        fig.add_trace(go.Scatter(x=x, y=_list(layerwise[metric]), mode="lines+markers", name=metric.upper(),
                                 line=dict(color=color),
                                 hovertemplate=f"layer %{{x}}<br>{metric.upper()} %{{y:.4f}}<extra></extra>"))
    for layer in flagged:
        fig.add_vrect(x0=layer - 0.5, x1=layer + 0.5, fillcolor="grey", opacity=0.2, line_width=0,
                      annotation_text="flagged", annotation_position="top left")
    return fig.update_layout(title=title, template=TEMPLATE, xaxis_title="layer", yaxis_title="score",
                             height=420, legend=dict(orientation="h", y=1.08))


def headline_scores(intervals: pd.DataFrame, title: str = "LRDS and SADS (whole model)") -> go.Figure:
    """The headline scores with their intervals: the "all" rows of ``uncertainty.score_intervals``."""
    overall = intervals[intervals.layer == "all"]
    fig = go.Figure(go.Scatter(
        x=[m.upper() for m in overall.metric], y=_list(overall.estimate), mode="markers",
        marker=dict(size=12, color=[COLORS[m] for m in overall.metric]),
        error_y=_error_y(overall.estimate, overall.ci_low, overall.ci_high, 4),
        customdata=_list(overall[["ci_low", "ci_high", "p_value"]].to_numpy(), 5),
        hovertemplate="%{x} %{y:.4f}<br>interval [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                      "<br>permutation p %{customdata[2]:.4f}<extra></extra>"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    return fig.update_layout(title=title, template=TEMPLATE, height=360, width=420, yaxis_title="score",
                             showlegend=False)


def key_regions_per_layer(per_layer: pd.DataFrame, title: str = "Key neurons per layer") -> go.Figure:
    """Figure 5 for one model: stacked key-neuron counts per layer (``KeyRegions.per_layer()``)."""
    fig = go.Figure([go.Bar(x=list(per_layer.index), y=per_layer[lang].tolist(), name=lang, hovertemplate=_COUNT_HOVER)
                     for lang in per_layer])
    return fig.update_layout(barmode="stack", title=title, template=TEMPLATE, xaxis_title="layer",
                             yaxis_title="key neurons", height=420)


def key_regions_threshold_slider(regions, thresholds: Sequence[float],
                                 title: str = "Key neurons per layer by z threshold") -> go.Figure:
    """Stacked key neurons per layer (``KeyRegions.with_threshold(t).per_layer()``), one slider step per threshold."""
    tables = [regions.with_threshold(t).per_layer() for t in thresholds]
    fig = go.Figure()
    for k, df in enumerate(tables):  # legendgroup: a hidden step lists no legend
        fig.add_traces([go.Bar(x=list(df.index), y=df[lang].tolist(), name=lang, legendgroup=lang, visible=k == 0,
                               hovertemplate=_COUNT_HOVER) for lang in df])
    return _slider(fig, [f"{t:g}" for t in thresholds],
                   [f"{title}: z > {t:g} (SKLR {int(df.to_numpy().sum()):,})" for t, df in zip(thresholds, tables)],
                   "z threshold ", barmode="stack", height=460, xaxis_title="layer", yaxis_title="key neurons",
                   legend=dict(orientation="h", y=1.1))


def key_region_sizes(sizes: pd.Series | pd.DataFrame, title: str = "Key neurons per language") -> go.Figure:
    """Figure 6/11: key-region size per language; a DataFrame (columns = checkpoints/models) gives groups."""
    frame = sizes.to_frame() if isinstance(sizes, pd.Series) else sizes
    fig = go.Figure([go.Bar(x=list(frame.index), y=frame[c].tolist(), name=str(c)) for c in frame.columns])
    return fig.update_layout(title=title, template=TEMPLATE, barmode="group", xaxis_title="language",
                             yaxis_title="key neurons", height=400, showlegend=len(frame.columns) > 1)


def deactivation_heatmap(table: pd.DataFrame, intervals: pd.DataFrame | None = None,
                         title: str = "Perplexity increase (%) after deactivation", diverging: bool = False,
                         x_title: str = "deactivated key region") -> go.Figure:
    """Table 1/4 as a heatmap: rows = evaluated language, columns = deactivated set, cells = % increase.

    table: ``evaluate.deactivation_table``; intervals: ``uncertainty.deactivation_intervals`` (hover). Increases
    span orders of magnitude: the colour is log10(1 + increase), a decrease drawn as 0; numbers shown are raw %.
    ``diverging``: red-blue centred on 0 (to the 95th percentile of |change|), for sets that can lower perplexity.
    """
    cells = table.drop(index=[KEY_NUMBER, KEY_PERCENT], errors="ignore").drop(columns=[FULL_COLUMN])
    raw = cells.to_numpy(dtype=float)
    band = {} if intervals is None else {(r, c): f"<br>interval [{lo:+,.1f}%, {hi:+,.1f}%]" for r, c, lo, hi in
                                         intervals[["lang", "condition", "ci_low", "ci_high"]].itertuples(index=False)}
    if diverging:
        top = float(np.nanpercentile(np.abs(raw), 95)) or None
        z, x = _list(raw, 2), list(cells.columns)
        scale = dict(colorscale="RdBu_r", zmid=0, zmin=-top if top else None, zmax=top, colorbar=dict(title="% change"))
    else:
        top = max(1.0, float(np.nanmax(raw)) if np.isfinite(raw).any() else 1.0)
        ticks = [t for t in (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000) if t <= top]
        z, x = _list(np.log10(1 + np.clip(raw, 0, None)), 4), [f"×{c}" for c in cells.columns]
        scale = dict(colorscale="Reds", zmin=0, zmax=float(np.log10(1 + top)),
                     colorbar=dict(title="% increase (log)", tickvals=_list(np.log10(1 + np.array(ticks)), 4),
                                   ticktext=[f"{t:,}%" for t in ticks]))
    fig = go.Figure(go.Heatmap(z=z, x=x, y=list(cells.index), text=[[f"{v:,.0f}%" for v in row] for row in raw],
                               texttemplate="%{text}", hoverinfo="text", **scale,
                               hovertext=[[f"×{c} on {r}: {v:+,.1f}%" + band.get((r, c), "")
                                           for c, v in zip(cells.columns, row)] for r, row in zip(cells.index, raw)]))
    return fig.update_layout(title=title, template=TEMPLATE, xaxis_title=x_title, height=460,
                             yaxis=dict(autorange="reversed", title="evaluated language"))


def switch_matrix(matrix: pd.DataFrame, title: str = "Continuations detected as the steered language") -> go.Figure:
    """Heatmap of shares: rows = prompt language, columns = steered (target) language (``steps.switch_matrix``)."""
    z = matrix.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(z=_list(z, 3), x=list(matrix.columns), y=list(matrix.index), texttemplate="%{text}",
                               text=[["" if np.isnan(v) else f"{100 * v:.0f}%" for v in row] for row in z],
                               colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="share"),
                               hovertemplate="prompt %{y}, steered to %{x}: %{z:.0%}<extra></extra>"))
    return fig.update_layout(title=title, template=TEMPLATE, xaxis_title="steered language", height=460,
                             yaxis=dict(autorange="reversed", title="prompt language"))


def dose_response(shares: pd.DataFrame, title: str = "Switch rate against steering strength") -> go.Figure:
    """One panel per target language: share of other-language prompts detected as the target against the
    strength, for the region and its size-matched random control (``uncertainty.share_intervals`` rows with
    target, kind, strength; bars: intervals), and the plain model's share as a dotted line."""
    targets = [t for t in shares.target.unique() if t is not None]
    cols, rows = min(3, len(targets)), -(-len(targets) // 3)  # rows: ceil(targets / 3)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"steered to {t}" for t in targets], shared_yaxes=True)
    for k, t in enumerate(targets):
        r, c = k // cols + 1, k % cols + 1
        for kind, color in (("region", COLORS["lrds"]), ("random", "grey")):
            d = shares[(shares.target == t) & (shares.kind == kind)].sort_values("strength")
            fig.add_trace(go.Scatter(x=_list(d.strength), y=_list(d.share, 3), name=kind, mode="lines+markers",
                                     error_y=_error_y(d.share, d.ci_low, d.ci_high), line=dict(color=color),
                                     legendgroup=kind, showlegend=k == 0), row=r, col=c)
        plain = shares[(shares.target == t) & (shares.kind == "none")]
        if len(plain):
            fig.add_hline(y=float(plain.share.iloc[0]), line_dash="dot", line_color="black", row=r, col=c)
    fig.update_xaxes(type="log", title_text="strength (x mean activation)", row=rows)
    fig.update_yaxes(range=[-0.02, 1.02], col=1, title_text="share")
    return fig.update_layout(title=title, template=TEMPLATE, height=260 * rows + 80,
                             legend=dict(orientation="h", y=1.1))


def patch_bands(shares: pd.DataFrame, title: str = "Patching: which layers carry the switch") -> go.Figure:
    """Grouped bars per target language: share of other-language prompts detected as the target with the whole
    region patched, each band of its layers alone, and the random control (rows with target, kind, band)."""
    fig = go.Figure([go.Bar(x=list(d.target), y=_list(d.share, 3), error_y=_error_y(d.share, d.ci_low, d.ci_high),
                            name="random (all layers)" if kind == "random" else f"region, {band}",
                            marker_color="grey" if kind == "random" else None)
                     for (kind, band), d in shares.groupby(["kind", "band"], sort=False)])
    return fig.update_layout(title=title, template=TEMPLATE, barmode="group", xaxis_title="patched-in language",
                             yaxis_title="share", yaxis_range=[0, 1.02], height=420)


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
    fig.update_yaxes(title="key neurons per language", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title="SKLR (all languages)", rangemode="tozero", secondary_y=True, showgrid=False)
    return fig.update_layout(title=title, template=TEMPLATE, height=420, xaxis_title="z threshold")


def stability(table: pd.DataFrame, title: str = "Key-region overlap between disjoint halves") -> go.Figure:
    """``robustness.stability_halves``: Jaccard overlap per language, one point per random split."""
    fig = go.Figure(go.Box(x=table.lang.tolist(), y=_list(table.jaccard), boxpoints="all", jitter=0.3,
                           pointpos=0, customdata=table.seed.tolist(), name="Jaccard",
                           hovertemplate="%{x}, split seed %{customdata}: Jaccard %{y:.3f}<extra></extra>"))
    return fig.update_layout(title=title, template=TEMPLATE, yaxis_range=[0, 1], xaxis_title="language",
                             yaxis_title="Jaccard (1 = the same neurons)", height=380, showlegend=False)


def exclusion(table: pd.DataFrame, k: int, title: str = "Dominant neurons per layer") -> go.Figure:
    """``diagnostics.exclusion_table``: layer-wise LRDS/SADS with all neurons (solid) and with each layer's k
    dominant neurons zeroed (dashed), and the top-k share of the squared norm (bars, right axis)."""
    fig, x = make_subplots(specs=[[{"secondary_y": True}]]), table.layer.tolist()
    fig.add_trace(go.Bar(x=x, y=_list(table[f"top{k}_share"]), name=f"top-{k} share", opacity=0.6,
                         marker_color=["#999" if d else "#ddd" for d in table.dominant]), secondary_y=True)
    for metric, color in COLORS.items():
        fig.add_trace(go.Scatter(x=x, y=_list(table[metric]), name=metric.upper(), line=dict(color=color)),
                      secondary_y=False)
        fig.add_trace(go.Scatter(x=x, y=_list(table[f"{metric}_excluded"]), name=f"{metric.upper()} without top-{k}",
                                 line=dict(color=color, dash="dash")), secondary_y=False)
    fig.update_yaxes(title="score", secondary_y=False)
    fig.update_yaxes(title=f"share of squared norm in the top {k} neurons", range=[0, 1], secondary_y=True,
                     showgrid=False)
    return fig.update_layout(title=title, template=TEMPLATE, height=420, xaxis_title="layer",
                             legend=dict(orientation="h", y=1.12))


def pooling(table: pd.DataFrame, names: Sequence[str] = ("all_tokens", "skip_first"),
            title: str = "First-token effect") -> go.Figure:
    """``diagnostics.compare_pooling``: layer-wise LRDS and SADS under two poolings (solid vs dashed)."""
    fig = go.Figure([go.Scatter(x=table.layer.tolist(), y=_list(table[f"{metric}_{name}"]),
                                name=f"{metric.upper()} ({name})", line=dict(color=color, dash=dash))
                     for metric, color in COLORS.items() for name, dash in zip(names, ("solid", "dash"))])
    return fig.update_layout(title=title, template=TEMPLATE, xaxis_title="layer", yaxis_title="score", height=400)


def series(table: pd.DataFrame, x: str, left: Sequence[str], right: Sequence[str] = (),
           errors: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None, log_x: bool = False,
           hover: str | None = None, title: str = "") -> go.Figure:
    """Figures 4, 7 and 10: metrics of a checkpoint or size series against ``x``, two y axes.

    ``errors`` maps a column to its standard-error column (symmetric bars) or to a pair of interval columns
    ``(low, high)``; ``labels`` renames axes; ``hover`` names a column (e.g. the model label) shown on hover.
    """
    errors, labels = errors or {}, dict(labels or {})
    fig = make_subplots(specs=[[{"secondary_y": bool(right)}]])
    colors = iter([*COLORS.values(), "#2ca02c", "#9467bd", "#8c564b"])
    extra = table[hover].astype(str).tolist() if hover else None
    for cols, secondary in ((left, False), (right, True)):
        for c in cols:
            err = errors.get(c)
            if isinstance(err, str):
                err = dict(type="data", array=_list(table[err]), visible=True)
            elif err is not None:
                err = _error_y(table[c], table[err[0]], table[err[1]], 4, visible=True)
            name = labels.get(c, c)
            fig.add_trace(go.Scatter(x=table[x].tolist(), y=_list(table[c]), name=name, mode="lines+markers",
                                     line=dict(color=next(colors), dash="dash" if secondary else "solid"),
                                     error_y=err, customdata=extra,
                                     hovertemplate=("%{customdata}<br>" if hover else "") +
                                     f"{labels.get(x, x)} %{{x}}<br>{name} %{{y:.4f}}<extra></extra>"),
                          secondary_y=secondary)
    fig.update_xaxes(title=labels.get(x, x), type="log" if log_x else None)
    fig.update_yaxes(title=" / ".join(labels.get(c, c) for c in left), secondary_y=False)
    if right:
        fig.update_yaxes(title=" / ".join(labels.get(c, c) for c in right), secondary_y=True, showgrid=False)
    return fig.update_layout(title=title, template=TEMPLATE, height=420, legend=dict(orientation="h", y=1.1))


def by_layer(table: pd.DataFrame, y_title: str, title: str = "") -> go.Figure:
    """One line per column against the layer (the index): e.g. ``series.series_per_layer`` (Figure 5) or
    ``series.series_layerwise`` (a layer-wise score for each model of a series)."""
    fig = go.Figure([go.Scatter(x=list(table.index), y=_list(table[c]), mode="lines+markers", name=str(c),
                                hovertemplate=f"{c}<br>layer %{{x}}<br>{y_title} %{{y:.4g}}<extra></extra>")
                     for c in table.columns])
    return fig.update_layout(title=title, template=TEMPLATE, xaxis_title="layer", yaxis_title=y_title, height=420)


def accuracy_bars(acc: pd.DataFrame, group: str | None = None, title: str = "Cross-lingual accuracy") -> go.Figure:
    """Accuracy per language with standard-error bars (``evaluate.crosslingual_accuracy``); ``group`` names a
    column (e.g. checkpoint or model) that splits the bars into groups."""
    groups = [("accuracy", acc)] if group is None else acc.groupby(group, sort=False)
    fig = go.Figure([go.Bar(x=list(df.lang), y=_list(df.acc), name=str(g), customdata=df.n.tolist(),
                            error_y=dict(type="data", array=_list(df.acc_stderr), visible=True),
                            hovertemplate="%{x}: %{y:.3f} ± %{error_y.array:.3f} (n=%{customdata})<extra></extra>")
                     for g, df in groups])
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    return fig.update_layout(title=title, template=TEMPLATE, barmode="group", yaxis_title="accuracy",
                             xaxis_title="language of the premise/story", yaxis_range=[0, 1], height=400,
                             showlegend=group is not None)


def mimebundle(fig: go.Figure, plotlyjs: bool = False) -> dict:
    """Display data for a figure: plotly's JSON mime type (interactive in JupyterLab and VS Code) plus an HTML
    div for nbconvert's HTML export, which needs ``window.Plotly``: ``plotlyjs`` embeds it (offline, ~4.8 MB)."""
    div = pio.to_html(fig, full_html=False, include_plotlyjs=plotlyjs, include_mathjax=False,
                      default_width="100%", validate=False, config={"responsive": True})
    return {"application/vnd.plotly.v1+json": fig.to_plotly_json(), "text/html": div}
