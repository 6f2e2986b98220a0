# ---
# jupyter:
#   kernelspec:
#     display_name: lfcore
#     language: python
#     name: lfcore
# ---

# %% [markdown]
# # Observation III: over training, linguistic regions shrink and activations become language-agnostic
#
# Zeng et al., COLING 2025, §4.4: Figure 4 (left: LRDS and SKLR against the training step of BLOOM-7b1) and
# Figure 5 (key neurons per layer at each step).
#
# **What the paper reports.** Early checkpoints have large key regions (high SKLR) and high LRDS; both fall as
# training goes on. Key neurons sit in the first and last layers and concentrate in the *first* layers as
# training proceeds, which the authors read as more efficient encoding into a shared semantic space.
#
# **What this run needs.** A series of checkpoints of one model. BLOOM-7b1's intermediate checkpoints are
# revisions of `bigscience/bloom-7b1-intermediate` on the Hugging Face hub: `lfcore reproduce
# params/paper_bloom_checkpoints.yaml` (network, a GPU with ~30 GB per checkpoint in bfloat16). Offline there is no
# real checkpoint series: the default runs the single final checkpoint of Gemma 3 270M, which shows the
# measurements but no trend. Two checkpoints with identical weights (same fingerprint under different revision
# names) raise a warning: a mislabelled series would fake a flat trend.

# %% tags=["parameters"]
title = "Offline default: Gemma 3 270M (base, GGUF Q4_K_M) on the bundled NTREX-128 sample"
languages = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
checkpoints = {"models": [{"spec": "gemma-3-270m", "label": "Gemma 3 270M (base, GGUF Q4_K_M), final"}],
               "note": ("Offline there is no checkpoint series: this runs the single final checkpoint, so no trend "
                        "can be read. The paper's series: lfcore reproduce params/paper_bloom_checkpoints.yaml "
                        "(network and a GPU).")}
corpus = {"source": "ntrex128", "n": 100, "seed": 0}
capture = {"batch_size": 16, "max_length": 512, "pool_special_tokens": False, "skip_first": False,
           "add_special_tokens": True}
regions = {"threshold": 2.0, "sweep": [1.0, 1.5, 2.0, 2.5], "epsilon": 0.0}
uncertainty = {"n_boot": 1000, "n_perm": 1000, "level": 0.95, "seed": 0}
out_dir = "reports/interactive/obs3_training"  # relative to the repository root (git-ignored)
cache_dir = "reports/interactive/cache"

# %%
import lfcore.cache
import lfcore.params
import lfcore.plots
import lfcore.report
import lfcore.series
import lfcore.steps

p = lfcore.params.notebook_params(languages=languages, checkpoints=checkpoints, corpus=corpus, capture=capture,
                                  regions=regions, uncertainty=uncertainty)
cache = lfcore.cache.Cache(lfcore.params.repo_path(cache_dir))
report = lfcore.report.Report(out_dir, notebook="obs3", cache=cache)
print(p.checkpoints.note)

# %% [markdown]
# ## Measure every checkpoint
#
# Each checkpoint is loaded in turn, its activations on the same sentences are captured (or read from the cache),
# scored, and released. The table records each revision with a hash of its weights.

# %%
sentences = lfcore.steps.sentences(p.corpus, p.languages)
points = lfcore.series.run_series(p.checkpoints.models, sentences, p.capture, p.regions.threshold, cache,
                                  report=report, uncertainty=p.uncertainty, epsilon=p.regions.epsilon)
steps = lfcore.series.series_table(points)
report.table(steps, "checkpoints", index=False)
report.numbers(**lfcore.series.series_numbers(steps, ["lrds", "sklr"]))

# %% [markdown]
# ## Figure 4 (left): LRDS and SKLR against the training step
#
# Solid: LRDS with its bootstrap interval (left axis); dashed: SKLR, the total size of the key regions (right
# axis). The paper's trend is both falling with the step.

# %%
report.show(lfcore.plots.series(steps, x="step", left=["lrds"], right=["sklr"], hover="label",
                                errors={"lrds": ("lrds_ci_low", "lrds_ci_high")},
                                labels={"step": "training step", "lrds": "LRDS", "sklr": "SKLR (key neurons)"},
                                title="Linguistic regions over training"), "fig4_left_lrds_sklr")

# %% [markdown]
# ## Figure 5: key neurons per layer at each checkpoint
#
# Key neurons of all languages per layer, one line per checkpoint. The paper: concentrated in the first and last
# layers, moving towards the first layers with training.

# %%
per_layer = lfcore.series.series_per_layer(points)
report.table(per_layer, "fig5_key_neurons_per_layer")
report.show(lfcore.plots.by_layer(per_layer, "key neurons (all languages)",
                                  title="Key neurons per layer over training"), "fig5_key_neurons_per_layer")

# %% [markdown]
# ## Layer-wise LRDS at each checkpoint
#
# The curve of Observation I for every checkpoint (hover for values).

# %%
report.show(lfcore.plots.by_layer(lfcore.series.series_layerwise(points, "lrds"), "LRDS",
                                  title="Layer-wise LRDS over training"), "layerwise_lrds_over_training")

# %% [markdown]
# ## Reading the result
#
# With one checkpoint (the offline default) there is no trend to read: the numbers are the end point of a series.
# With a real series, a falling LRDS and SKLR supports the paper; check that successive checkpoints have distinct
# fingerprints (table above) before reading a flat stretch as a finding.
