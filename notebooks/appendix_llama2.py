# ---
# jupyter:
#   kernelspec:
#     display_name: lfcore
#     language: python
#     name: lfcore
# ---

# %% [markdown]
# # Appendix C: an English-centric family (LLaMA2 in the paper)
#
# Zeng et al., COLING 2025, Appendix C: Figure 8 (similarity maps of LLaMA2 7b/13b/70b), Figure 9 (layer-wise LRDS
# and SADS of LLaMA2-7b), Table 4 (deactivation on LLaMA2-7b, with a random set slightly larger than the largest
# key region), Figure 10 (metrics across sizes) and Figure 11 (key neurons per language on LLaMA2-7b); and
# Appendix A's Table 3 (LLaMA2-7b generations with a key region switched off).
#
# **What the paper reports.** The same findings as for BLOOM, weaker: LLaMA2 saw about 10% non-English data, so the
# same-meaning bands are fainter, LRDS fluctuates more across layers (high in the last layers), and the key
# regions are larger for languages the model knows less (Table 4: vi, hi, id).
#
# **What this run needs.** `lfcore reproduce params/paper_llama2.yaml` (meta-llama/Llama-2-7b-hf, 13b, 70b; gated
# on the hub, `HF_TOKEN` or `huggingface-cli login`; the 70b model needs `device_map: auto` over several GPUs).
# **Offline:** the English-centric SmolLM2-135M is analysed first (the role of LLaMA2-7b) and set beside the
# multilingual Gemma 3 270M. These are different families and sizes, so the comparison contrasts training data
# mixtures, not scale.

# %% tags=["parameters"]
title = "Offline default: Gemma 3 270M (base, GGUF Q4_K_M) on the bundled NTREX-128 sample"
languages = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
family = {"models": [{"spec": "smollm2-135m", "label": "SmolLM2 135M Instruct (GGUF Q4_1)"},
                     {"spec": "gemma-3-270m", "label": "Gemma 3 270M (base, GGUF Q4_K_M)"}],
          "note": ("Offline stand-in for the LLaMA2 family: the English-centric SmolLM2-135M (analysed in detail) "
                   "beside the multilingual Gemma 3 270M. The paper's run: lfcore reproduce params/paper_llama2.yaml.")}
corpus = {"source": "ntrex128", "n": 100, "seed": 0}
capture = {"batch_size": 16, "max_length": 512, "pool_special_tokens": False, "skip_first": False,
           "add_special_tokens": True}
regions = {"threshold": 2.0, "sweep": [1.0, 1.5, 2.0, 2.5], "epsilon": 0.0}
perplexity = {"source": "ntrex128-passages", "documents": 2, "max_tokens": 256, "seqlen": 64, "stride": None,
              "windows": "overlapping", "batch_size": 8, "random_percent": 10.0, "seed": 0}
accuracy = {"task": "xcopa_xl", "languages": ["en", "id", "vi", "zh"], "limit": 40, "batch_size": 16}
generation = {"languages": ["en", "zh", "fr"], "prompts": None, "prompts_per_language": 2, "max_new_tokens": 24}
uncertainty = {"n_boot": 1000, "n_perm": 1000, "level": 0.95, "seed": 0}
diagnostics = {"k": 5, "share": 0.5, "first_token_sentences": 20}
maps = {"sentences": 100, "layer_sentences": 12, "family_sentences": 40}
out_dir = "reports/interactive/appendix_llama2"  # relative to the repository root (git-ignored)
cache_dir = "reports/interactive/cache"

# %%
import lfcore.cache
import lfcore.diagnostics
import lfcore.evaluate
import lfcore.metrics
import lfcore.params
import lfcore.plots
import lfcore.regions
import lfcore.report
import lfcore.series
import lfcore.steps
import lfcore.uncertainty

p = lfcore.params.notebook_params(languages=languages, family=family, corpus=corpus, capture=capture, regions=regions,
                                  perplexity=perplexity, accuracy=accuracy, generation=generation,
                                  uncertainty=uncertainty, diagnostics=diagnostics, maps=maps)
cache = lfcore.cache.Cache(lfcore.params.repo_path(cache_dir))
report = lfcore.report.Report(out_dir, notebook="appendix", cache=cache)
print(p.family.note)

# %% [markdown]
# ## The first model of the family in detail (LLaMA2-7b in the paper)

# %%
lm = lfcore.steps.load(p.family.models[0])
report.model(lm.meta())
sentences = lfcore.steps.sentences(p.corpus, p.languages)
acts = lfcore.steps.activations(lm, sentences, p.capture, cache)
print(lm.meta())

# %% [markdown]
# ### Figure 9: layer-wise LRDS and SADS, with intervals
#
# Grey columns: layers dominated by a few neurons (see the diagnostics in Observation I); the table below the
# figure gives the scores with those neurons zeroed.

# %%
intervals = lfcore.steps.intervals(acts, p.uncertainty, cache)
report.numbers(**lfcore.steps.interval_numbers(intervals))
report.table(intervals, "score_intervals", index=False)
dominance = lfcore.diagnostics.exclusion_table(acts, p.diagnostics.k, p.diagnostics.share)
report.numbers(flagged_layers=lfcore.steps.flagged_layers(dominance))
layers = lfcore.metrics.layerwise(acts)
report.show(lfcore.plots.layer_scores(layers, intervals, flagged=lfcore.steps.flagged_layers(dominance),
                                      title=f"Layer-wise LRDS and SADS: {lm.title}"), "fig9_layerwise")
report.table(dominance, "fig9_layerwise_and_dominance", index=False)

# %% [markdown]
# ### Figure 11: key neurons per language, and where they sit

# %%
key = lfcore.regions.key_regions(acts, p.regions.threshold, p.regions.epsilon)
report.table(key.summary(), "fig11_key_region_sizes")
report.show(lfcore.plots.key_region_sizes(key.sizes(), title=f"Key neurons per language: {lm.title}"),
            "fig11_key_region_sizes")
report.show(lfcore.plots.key_regions_per_layer(key.per_layer(), title=f"Key neurons per layer: {lm.title}"),
            "key_regions_per_layer")

# %% [markdown]
# ### Table 4: perplexity after switching off each key region
#
# As Table 1, with the random set sized as in the paper's Table 4 when `random_percent` is empty: the next whole
# percent above the largest key region. Hover over a cell of the heatmap for its bootstrap interval.

# %%
texts = lfcore.steps.perplexity_texts(p.perplexity, p.languages, lm.tokenizer)
sets = lfcore.steps.key_region_sets(key, p.perplexity)
table = lfcore.steps.perplexity_table(lm, texts, sets, p.perplexity, cache)
report.table(table, "table4_deactivation", shown=lfcore.evaluate.format_table(table))
cells = lfcore.uncertainty.deactivation_intervals(table.attrs["window_nll"], table.attrs["window_tokens"],
                                                  n_boot=p.uncertainty.n_boot, level=p.uncertainty.level,
                                                  seed=p.uncertainty.seed)
report.numbers(**lfcore.steps.table_numbers(table, cells))
report.table(cells, "table4_intervals", index=False)
report.show(lfcore.plots.deactivation_heatmap(table, cells, title=f"Perplexity increase (%) after deactivation: "
                                                                 f"{lm.title}"), "table4_deactivation")

# %% [markdown]
# ### Table 3 (Appendix A): generations with a key region switched off
#
# Greedy continuations of short news prompts, with the full model and with each listed language's key region
# off, as Observation II does for BLOOM. The paper saw LLaMA2-7b's Chinese and French break down and its English
# hold.

# %%
report.table(lfcore.steps.generations(lm, p.generation, sets, cache), "table3_generations")
del lm, acts

# %% [markdown]
# ## The whole family
#
# ### Figure 10: metrics across the family

# %%
points = lfcore.series.run_series(p.family.models, sentences, p.capture, p.regions.threshold, cache,
                                  accuracy_cfg=p.accuracy, report=report, map_sentences=p.maps.family_sentences,
                                  uncertainty=p.uncertainty,
                                  epsilon=p.regions.epsilon)
table = lfcore.series.series_table(points)
report.table(table, "fig10_family", index=False)
report.numbers(**lfcore.series.series_numbers(table, ["lrds", "sads", "acc"]))
report.show(lfcore.plots.series(table, x="params", left=["lrds", "sads"], right=["acc"],
                                errors={"acc": "acc_stderr", "lrds": ("lrds_ci_low", "lrds_ci_high"),
                                        "sads": ("sads_ci_low", "sads_ci_high")},
                                hover="label", log_x=True,
                                labels={"params": "parameters", "lrds": "LRDS", "sads": "SADS",
                                        "acc": f"{p.accuracy.task} accuracy"},
                                title="Metrics across the family"), "fig10_family")

# %% [markdown]
# ### Figure 8: similarity maps
#
# The same sentences for every model (the first `maps.family_sentences` ids). The paper: blocks everywhere, bands
# fainter than BLOOM's and sharper with size.

# %%
report.show(lfcore.plots.similarity_maps(*lfcore.series.series_maps(points), corpus=sentences, title="Similarity maps"),
            "fig8_similarity_maps")

# %% [markdown]
# ## Reading the result
#
# An English-centric model should show a higher LRDS and weaker SADS than a multilingual one of similar size, and
# larger key regions (and larger perplexity jumps) for the languages it knows least.
