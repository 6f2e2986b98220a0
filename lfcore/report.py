"""What a notebook shows and saves (``Report``: figures as plotly JSON, tables as CSV, headline numbers),
its ipywidgets explorers, and the self-contained offline HTML rendering of an executed notebook."""
from __future__ import annotations

import html
import json
import os
import warnings
from pathlib import Path

import pandas as pd
from IPython.display import HTML, display

from .cache import Cache, atomic_write, save_table
from .metrics import similarity
from .params import repo_path
from .plots import key_regions_per_layer, mimebundle, similarity_map

RUNNER_ENV = "LFCORE_NOTEBOOK_RUNNER"  # set by ``runner.reproduce`` for its kernels: no live frontend, no widgets


def explore_layers(acts, corpus=None):
    """An ipywidgets slider over layers; "draw" shows that layer's similarity map (needs a live kernel)."""
    if os.environ.get(RUNNER_ENV):
        return HTML(WIDGET_NOTE)  # a widget under the runner can hang nbclient (issue #312)
    import ipywidgets  # only in a live kernel

    def show(layer: int):
        display(mimebundle(similarity_map(similarity(acts, [layer]), acts, corpus, f"Layer {layer}")), raw=True)

    return ipywidgets.interactive(show, {"manual": True, "manual_name": "draw"},
                                  layer=ipywidgets.SelectionSlider(options=acts.layers, description="layer"))


def explore_threshold(regions, thresholds: list[float]):
    """An ipywidgets slider over z thresholds showing key neurons per layer (needs a live kernel); it spans the
    sweep and the threshold in use, and a threshold outside the sweep is said, not clamped."""
    if os.environ.get(RUNNER_ENV):
        return HTML(WIDGET_NOTE)
    import ipywidgets  # only in a live kernel
    low, high = min(thresholds), max(thresholds)

    def show(threshold: float):
        r = regions.with_threshold(threshold)
        if not low <= threshold <= high:
            display(HTML(f"<p class='lf-widget-note'>z &gt; {threshold:g} is outside the sweep [{low:g}, {high:g}] "
                         "(regions.sweep)</p>"))
        display(mimebundle(key_regions_per_layer(r.per_layer(), f"z > {threshold:g}: SKLR {r.sklr:,}")), raw=True)

    return ipywidgets.interactive(show, threshold=ipywidgets.FloatSlider(
        value=regions.threshold, min=min(low, regions.threshold), max=max(high, regions.threshold), step=0.1,
        description="z threshold"))


def number(v) -> str:
    """A number for reading: thousands separators from 10,000 on, else 4 significant digits."""
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _plain(v):
    """A numpy/torch scalar or array as a plain Python number or list (for ``json.dumps``); anything else as text."""
    return v.tolist() if hasattr(v, "tolist") else str(v)


class Report:
    """What a notebook shows and saves: figures (plotly JSON), tables (CSV), headline numbers, warnings.

    Files land under ``out_dir`` (relative: to the repository root, ``params.repo_path``): ``figures/<name>.json``,
    ``tables/<name>.csv`` (+ ``.json`` with the frame's ``attrs``) and ``summary.json``, rewritten after every
    change so a failed run still records what it reached, with the hit and miss counts of ``cache`` (not owned).
    """

    def __init__(self, out_dir: str | Path = ".", notebook: str = "", cache: Cache | None = None):
        self.dir = repo_path(out_dir)
        self.cache = cache
        self.plotlyjs_sent = False  # the first figure shown carries plotly.js, for nbconvert's HTML
        self.summary = {"notebook": notebook, "headline": {}, "warnings": [], "models": [], "cache": {},
                        "tables": [], "figures": []}

    def show(self, fig, name: str):
        """Save ``fig`` as ``figures/<name>.json`` and display it (interactive and static; the first figure
        embeds plotly.js, so ``jupyter nbconvert --to html`` draws every figure offline)."""
        atomic_write(self.dir / f"figures/{name}.json", fig.to_json())
        self._add("figures", f"figures/{name}.json")
        display(mimebundle(fig, plotlyjs=not self.plotlyjs_sent), raw=True)
        self.plotlyjs_sent = True

    def table(self, df: pd.DataFrame, name: str, shown: pd.DataFrame | None = None, index: bool = True,
              fold: int = 20):
        """Save ``df`` as ``tables/<name>.csv`` (its ``attrs`` as JSON beside it) and display ``shown`` or it;
        a table longer than ``fold`` rows is shown folded (click to open)."""
        save_table(df, self.dir / f"tables/{name}.csv", index=index)
        self._add("tables", f"tables/{name}.csv")
        shown = df if shown is None else shown
        with pd.option_context("display.max_colwidth", None, "display.float_format", number):
            if len(shown) <= fold:
                return display(shown)
            display(HTML(f"<details><summary>table <code>{html.escape(name)}</code>: {len(shown)} rows "
                         f"(click to show; CSV: tables/{html.escape(name)}.csv)</summary>"
                         f"{shown.to_html(index=index, float_format=number)}</details>"))

    def numbers(self, **values) -> None:
        """Record headline numbers (shown on the index page and stored in summary.json)."""
        self.summary["headline"].update(values)
        self._save()

    def model(self, meta: dict) -> None:
        """Record a model's metadata (``LoadedModel.meta()``)."""
        self.summary["models"].append(meta)
        self._save()

    def warn(self, message: str, category: type[Warning] = UserWarning) -> None:
        """Issue a warning and record it (summary.json, index page)."""
        warnings.warn(message, category, stacklevel=2)
        self.summary["warnings"].append(message)
        self._save()

    def _add(self, kind: str, rel: str) -> None:
        if rel not in self.summary[kind]:
            self.summary[kind].append(rel)
        self._save()

    def _save(self) -> None:
        self.summary["cache"] = self.cache.summary() if self.cache else {}
        atomic_write(self.dir / "summary.json", json.dumps(self.summary, indent=1, ensure_ascii=False, default=_plain))


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}<script type="text/javascript">{{ resources.plotly_js }}</script>{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style>
.lf-nav { font-family: sans-serif; padding: 8px 16px; background: #f4f6f8; border-bottom: 1px solid #dde; }
.lf-widget-note { color: #667; font-style: italic; }
</style>{% endblock extra_css %}
{%- block body_header -%}{{ super() }}<nav class="lf-nav"><a href="index.html">&larr; all reports</a>
&middot; {{ resources.lf_title }}</nav>{%- endblock body_header -%}
"""
PLOTLYJS_MARK = "* plotly.js v"  # the licence header of the embedded bundle
WIDGET_NOTE = ("<p class='lf-widget-note'>[interactive control: open the .ipynb in JupyterLab to use it; "
               "the static figure next to it covers the same ground]</p>")


def render_html(ipynb: str | Path, html_path: str | Path, title: str = "") -> Path:
    """A self-contained, offline HTML report of an executed notebook: plotly.js embedded once (the notebook's
    first figure carries it; else the page head), no CDN. ``lfcore render NOTEBOOK.ipynb`` runs it.

    Widget outputs are dropped: under the runner ``explore_*`` show ``WIDGET_NOTE``, so a widget left is a
    library's progress bar, meaningless without a live kernel."""
    import jinja2  # the rendering libraries load only where reports are rendered
    import nbformat
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    nb = nbformat.read(str(ipynb), as_version=4)
    carried = any(PLOTLYJS_MARK in o.get("data", {}).get("text/html", "")
                  for cell in nb.cells for o in cell.get("outputs", []))
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs
                            if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"lfcore_report.html.j2": _TEMPLATE})],
                            template_file="lfcore_report.html.j2")
    plotly_js = "" if carried else get_plotlyjs()
    body, _ = exporter.from_notebook_node(nb, resources={"plotly_js": plotly_js, "lf_title": html.escape(title),
                                                         "metadata": {"name": title or Path(ipynb).stem}})
    return atomic_write(Path(html_path), body)
