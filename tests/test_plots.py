"""plots: every figure builds from lfcore result objects, holds plain numbers (no base64 arrays), and shows
what a reader needs (hover text with the sentence, slider steps per layer and threshold, error bars)."""
from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from synthetic import planted

from lfcore import metrics, plots, regions
from lfcore.corpus import ParallelCorpus, Record
from lfcore.core import FULL_COLUMN, KEY_NUMBER, KEY_PERCENT


@pytest.fixture(scope="module")
def acts():
    return metrics.ordered(planted(n_ids=5, langs=("en", "zh", "fr", "ar", "es", "hi"), n_layers=3, width=8,
                                   key_neurons={"zh": [3, 20]}))


@pytest.fixture(scope="module")
def corpus(acts):
    return ParallelCorpus([Record(i, l, f"sentence {i} in {l} <b>&") for i, l in zip(acts.sentence_ids, acts.langs)])


def _plain(fig: go.Figure) -> dict:
    """The figure's JSON, checked to hold no base64 ("bdata") arrays: the saved JSON is plain numbers."""
    text = fig.to_json()
    assert "bdata" not in text
    return json.loads(text)


def test_similarity_map_hover_names_language_id_and_sentence(acts, corpus):
    s = metrics.similarity(acts)
    fig = plots.similarity_map(s, acts, corpus, title="map")
    data = _plain(fig)["data"][0]
    assert data["type"] == "heatmap" and len(data["z"]) == len(acts.langs) == len(data["x"])
    assert data["z"][0][0] == pytest.approx(1.0, abs=1e-3)
    first = data["y"][0]
    assert first.startswith(f"{acts.langs[0]} · {acts.sentence_ids[0]} · sentence")
    assert "&lt;b&gt;&amp;" in first  # sentence text is escaped for plotly's hover HTML
    assert len(set(data["x"])) == len(data["x"])  # labels are unique (categorical axis)
    ticks = fig.layout.xaxis.ticktext
    assert list(ticks) == acts.languages


def test_layer_slider_has_one_step_per_layer(acts, corpus):
    fig = plots.layer_similarity_slider(metrics.layer_maps(acts), acts, corpus)
    _plain(fig)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [str(l) for l in acts.layers]
    assert [t.visible for t in fig.data] == [True] + [False] * (len(acts.layers) - 1)
    assert steps[1].args[0]["visible"] == [False, True, False]
    # plotly.js 3+ drops a plain-string title in an update: the step must pass {"title": {"text": ...}}
    assert steps[1].args[1] == {"title": {"text": f"Similarity map per layer: layer {acts.layers[1]}"}}


def test_similarity_maps_side_by_side(acts, corpus):
    s = metrics.similarity(acts)
    fig = plots.similarity_maps([s, s], [acts, acts], ["a", "b"], corpus)
    assert len(fig.data) == 2 and fig.layout.annotations[1].text == "b"


def test_layer_scores_with_intervals_and_flags(acts):
    layers = metrics.layerwise(acts)
    ci = pd.DataFrame([{"metric": m, "layer": l, "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_value": 0.01}
                       for m in ("lrds", "sads") for l in ["all", *acts.layers]])
    fig = plots.layer_scores(layers, ci, flagged=[1])
    names = [t.name for t in fig.data]
    assert names.count("LRDS") == 1 and names.count("SADS") == 1 and len(fig.data) == 4  # 2 bands + 2 lines
    assert len(fig.layout.shapes) == 1
    head = plots.headline_scores(ci)
    assert list(head.data[0].x) == ["LRDS", "SADS"] and head.data[0].error_y.array[0] == pytest.approx(0.1)


def test_key_region_figures(acts):
    key = regions.key_regions(acts, threshold=1.5)
    fig = plots.key_regions_per_layer(key.per_layer())
    assert len(fig.data) == len(key.langs) and fig.layout.barmode == "stack"
    sweep = plots.key_regions_threshold_slider(key, [1.0, 1.5, 2.0])
    _plain(sweep)
    assert len(sweep.data) == 3 * len(key.langs) and len(sweep.layout.sliders[0].steps) == 3
    assert f"SKLR {key.with_threshold(1.0).sklr:,}" in sweep.layout.title.text
    step = sweep.layout.sliders[0].steps[1]
    assert step.args[1]["title"]["text"].endswith(f"z > 1.5 (SKLR {key.with_threshold(1.5).sklr:,})")
    assert all(t.showlegend is not False for t in sweep.data)  # each step's visible bars list every language
    sizes = plots.key_region_sizes(pd.DataFrame({"step 1": key.sizes(), "step 2": key.sizes()}))
    assert [t.name for t in sizes.data] == ["step 1", "step 2"]


def test_deactivation_heatmap_labels_cells_and_intervals():
    langs = ["en", "zh"]
    table = pd.DataFrame({FULL_COLUMN: [10.0, 20.0, float("nan"), float("nan")], "en": [50.0, 2.0, 10, 1.0],
                          "zh": [1.0, 80.0, 12, 1.2], "Random 10%": [5.0, 6.0, 20, 2.0]},
                         index=pd.Index(langs + [KEY_NUMBER, KEY_PERCENT], name="lang"))
    ci = pd.DataFrame([{"lang": l, "condition": c, "ci_low": -1.0, "ci_high": 99.0} for l in langs
                       for c in ("en", "zh", "Random 10%")])
    fig = plots.deactivation_heatmap(table, ci)
    data = _plain(fig)["data"][0]
    assert data["y"] == langs and data["x"] == ["×en", "×zh", "×Random 10%"]
    assert data["text"][1][1] == "80%" and "interval [-1.0%, +99.0%]" in data["hovertext"][0][0]


def test_deactivation_heatmap_colours_on_a_log_scale_with_raw_numbers():
    table = pd.DataFrame({FULL_COLUMN: [1.0, 1.0, 1.0], "fr": [25_013.0, 820.0, -3.0], "es": [4.0, 187.0, 0.5]},
                         index=pd.Index(["fr", "es", "pt"], name="lang"))
    data = _plain(plots.deactivation_heatmap(table))["data"][0]
    assert data["text"][0][0] == "25,013%" and data["hovertext"][0][0] == "×fr on fr: +25,013.0%"
    assert data["z"][1][0] == pytest.approx(2.914, abs=1e-3)  # log10(1 + 820): 820% is mid-scale, not white
    assert data["z"][2][0] == 0 and data["zmax"] == pytest.approx(4.398, abs=1e-3)
    assert "10,000%" in data["colorbar"]["ticktext"]


def test_series_and_accuracy_error_bars():
    table = pd.DataFrame({"label": ["a", "b"], "step": [1, 2], "lrds": [0.2, 0.1], "sklr": [100, 50],
                          "acc": [0.5, 0.6], "acc_stderr": [0.05, 0.04]})
    fig = plots.series(table, "step", ["lrds"], ["acc"], errors={"acc": "acc_stderr"}, hover="label")
    _plain(fig)
    assert fig.data[1].error_y.array == (0.05, 0.04) and fig.data[0].error_y.array is None
    acc = pd.DataFrame({"lang": ["en", "zh"] * 2, "acc": [0.6, 0.5, 0.7, 0.55], "acc_stderr": [0.05] * 4,
                        "n": [50] * 4, "model": ["m1", "m1", "m2", "m2"]})
    bars = plots.accuracy_bars(acc, group="model")
    assert [t.name for t in bars.data] == ["m1", "m2"] and bars.data[0].error_y.array == (0.05, 0.05)
    lines = plots.by_layer(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), "key neurons")
    assert len(lines.data) == 2


def test_mimebundle_embeds_plotlyjs_only_when_asked(acts, corpus):
    fig = plots.similarity_map(metrics.similarity(acts), acts, corpus)
    html = plots.mimebundle(fig, plotlyjs=True)["text/html"]
    assert html.count("* plotly.js v") == 1 and "<script src=" not in html  # offline, for plain nbconvert


def test_mimebundle_is_interactive_and_static_without_plotlyjs(acts, corpus):
    fig = plots.similarity_map(metrics.similarity(acts), acts, corpus)
    bundle = plots.mimebundle(fig)
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
    html = bundle["text/html"]
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html
    assert "<script src=" not in html and len(html) < 500_000  # plotly.js is embedded once by the report
    json.dumps(bundle["application/vnd.plotly.v1+json"])


def test_plots_do_not_mutate_inputs(acts):
    before = acts.values.clone()
    plots.similarity_map(metrics.similarity(acts), acts)
    assert torch.equal(before, acts.values)


def test_threshold_widget_spans_a_threshold_outside_the_sweep(acts, monkeypatch):
    from lfcore import report

    monkeypatch.delenv(report.RUNNER_ENV, raising=False)
    key = regions.key_regions(acts, threshold=2.2)  # below sqrt(6 - 1), the largest z-score with 6 languages
    slider = report.explore_threshold(key, [1.0, 1.5, 2.0]).children[0]
    assert (slider.min, slider.max, slider.value) == (1.0, 2.2, 2.2)  # not clamped to the sweep's 2.0


def test_steering_figures():
    matrix = pd.DataFrame([[0.9, 0.5], [0.25, 1.0]], index=["en", "zh"], columns=["en", "zh"])
    data = _plain(plots.switch_matrix(matrix))["data"][0]
    assert data["text"] == [["90%", "50%"], ["25%", "100%"]] and data["zmax"] == 1
    shares = pd.DataFrame([{"target": t, "kind": k, "strength": s, "share": 0.5, "ci_low": 0.25, "ci_high": 0.75,
                            "band": b} for t in ("en", "zh") for k, s, b in
                           (("none", 0.0, "all"), ("region", 1.0, "all"), ("region", 4.0, "all"),
                            ("random", 1.0, "all"), ("random", 4.0, "all"), ("region", float("nan"), "layers 0-1"))])
    fig = _plain(plots.dose_response(shares[shares.band == "all"]))
    assert len(fig["data"]) == 4 and fig["data"][0]["error_y"]["array"] == [0.25, 0.25]
    bars = _plain(plots.patch_bands(shares[shares.strength.isna() | (shares.strength == 1.0)]))["data"]
    assert {b["name"] for b in bars} >= {"region, all", "random (all layers)", "region, layers 0-1"}
    table = pd.DataFrame({FULL_COLUMN: [10.0, 20.0], "en region x1": [-30.0, 5.0]}, index=pd.Index(["en", "zh"]))
    heat = _plain(plots.deactivation_heatmap(table, diverging=True))["data"][0]
    assert heat["x"] == ["en region x1"] and heat["zmid"] == 0 and heat["zmin"] == -heat["zmax"]
