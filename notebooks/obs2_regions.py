# ---
# jupyter:
#   kernelspec:
#     display_name: lfcore
#     language: python
#     name: lfcore
# ---

# %% [markdown]
# # Observation II: key linguistic regions, and what happens when they are switched off
#
# Zeng et al., COLING 2025, §3.3 and §4.3: Table 1 (BLOOM-7b1), Table 4 (LLaMA2-7b), Appendix A (generations).
#
# **Method (§3.3).** A neuron's *contribution score* for a language (eq. 11) is its share of the mean
# same-language similarity: the sum over sentence pairs of that language of the product of the neuron's
# normalised activations. Its z-score across languages (eqs. 12-14) says how exceptional that share is. The
# **key linguistic region** of a language is the set of neurons with z above a threshold (the paper: 2); **SKLR**
# is the sum of the regions' sizes. With L languages, no z-score can exceed √(L-1) (2.83 for nine).
#
# **Test.** Zero a language's key region (at every token, at the input of the MLP down projection) and measure
# the perplexity of every language. The paper reports a large increase on the diagonal (the language whose region
# is off) and little elsewhere, compared with switching off a random 10% of all neurons.

# %% tags=["parameters"]
title = "Offline default: Gemma 3 270M (base, GGUF Q4_K_M) on the bundled NTREX-128 sample"
languages = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
model = {"spec": "gemma-3-270m", "revision": None, "dtype": "float32", "device_map": None, "site": None}
corpus = {"source": "ntrex128", "n": 100, "seed": 0}
capture = {"batch_size": 16, "max_length": 512, "pool_special_tokens": False, "skip_first": False,
           "add_special_tokens": True}
regions = {"threshold": 2.0, "sweep": [1.0, 1.5, 2.0, 2.5], "epsilon": 0.0}
perplexity = {"source": "ntrex128-passages", "documents": 2, "max_tokens": 256, "seqlen": 64, "stride": None,
              "windows": "overlapping", "batch_size": 8, "random_percent": 10.0, "seed": 0}
generation = {"languages": ["en", "zh", "fr"], "prompts": None, "prompts_per_language": 2, "max_new_tokens": 24}
uncertainty = {"n_boot": 1000, "n_perm": 1000, "level": 0.95, "seed": 0}
diagnostics = {"k": 5, "share": 0.5, "first_token_sentences": 20}
robustness = {"seeds": [0, 1, 2], "lape": False}
out_dir = "reports/interactive/obs2_regions"  # relative to the repository root (git-ignored)
cache_dir = "reports/interactive/cache"

# %%
import lfcore.cache
import lfcore.diagnostics
import lfcore.evaluate
import lfcore.params
import lfcore.plots
import lfcore.regions
import lfcore.report
import lfcore.robustness
import lfcore.steps
import lfcore.uncertainty

p = lfcore.params.notebook_params(languages=languages, model=model, corpus=corpus, capture=capture, regions=regions,
                                  perplexity=perplexity, generation=generation, uncertainty=uncertainty,
                                  diagnostics=diagnostics, robustness=robustness)
cache = lfcore.cache.Cache(lfcore.params.repo_path(cache_dir))
report = lfcore.report.Report(out_dir, notebook="obs2", cache=cache)

# %% [markdown]
# ## Model, sentences, activations
#
# The same sample as Observation I; with a shared cache the activations are read, not recomputed.

# %%
lm = lfcore.steps.load(p.model)
report.model(lm.meta())
sentences = lfcore.steps.sentences(p.corpus, p.languages)
acts = lfcore.steps.activations(lm, sentences, p.capture, cache)
print(lm.meta())
print(sentences)

# %% [markdown]
# ## Key linguistic regions
#
# Size of each language's region and its share of all neurons, then where the regions sit (the paper: mostly in
# the first and last layers).

# %%
key = lfcore.regions.key_regions(acts, p.regions.threshold, p.regions.epsilon)
report.numbers(SKLR=key.sklr, SKLR_percent_of_neurons=float(key.summary().loc["SKLR", "percent"]))
report.table(key.summary(), "key_region_sizes")
report.show(lfcore.plots.key_region_sizes(key.sizes(), title=f"Key neurons per language (z > {key.threshold:g})"),
            "key_region_sizes")
report.show(lfcore.plots.key_regions_per_layer(key.per_layer(), title=f"Key neurons per layer (z > {key.threshold:g})"),
            "key_regions_per_layer")
report.table(key.per_layer(), "key_regions_per_layer")

# %% [markdown]
# ## How robust are the regions?
#
# ### The threshold
#
# The threshold is a choice. The sweep shows each language's region and SKLR as the cut moves from 1 to √(L-1),
# where every region is empty. A finding that holds only near one threshold is fragile.

# %%
sweep = lfcore.robustness.threshold_sweep(key)
report.table(sweep, "threshold_sweep", index=False)
report.show(lfcore.plots.sweep(sweep, chosen=p.regions.threshold), "threshold_sweep")

# %% [markdown]
# Where the regions sit at each threshold of `regions.sweep` (the slider works in static HTML; the widget below
# it takes any value with a live kernel).

# %%
report.show(lfcore.plots.key_regions_threshold_slider(key, p.regions.sweep), "key_regions_by_threshold")
lfcore.report.explore_threshold(key, p.regions.sweep)

# %% [markdown]
# ### The sample
#
# The sentence ids are split at random into two disjoint halves and the regions found on each half are compared
# (Jaccard overlap: 1 = the same neurons, 0 = none shared), for several random splits. Low overlap means a
# region depends on which sentences were drawn.

# %%
stability, _ = lfcore.robustness.stability_halves(acts, p.regions.threshold, seeds=p.robustness.seeds,
                                                  epsilon=p.regions.epsilon)
report.numbers(**lfcore.steps.stability_numbers(stability))
report.table(stability, "stability_halves", index=False)
report.show(lfcore.plots.stability(stability), "stability_halves")

# %% [markdown]
# ### Dominant neurons
#
# Every sentence vector is normalised before contribution scores are computed, so a few neurons with huge values
# (see the diagnostics of Observation I) set the scale of all the others, language by language. The regions are
# recomputed with the dominant neurons of the flagged layers zeroed; the overlap with the original regions says
# how much of them that scale effect made.

# %%
dominance = lfcore.diagnostics.dominance(acts, ks=[p.diagnostics.k], threshold=p.diagnostics.share,
                                         flag_k=p.diagnostics.k)
clean = lfcore.regions.key_regions(lfcore.steps.without_dominant(acts, dominance, p.diagnostics.k), p.regions.threshold,
                                    p.regions.epsilon)
report.numbers(flagged_layers=lfcore.steps.flagged_layers(dominance), SKLR_without_dominant_neurons=clean.sklr)
report.table(clean.summary(), "key_region_sizes_without_dominant")
report.table(lfcore.robustness.region_jaccard(key, clean), "key_regions_vs_without_dominant", index=False)

# %% [markdown]
# ### A second selection method: LAPE
#
# LAPE (Tang et al. 2024) picks neurons whose probability of being active is concentrated on few languages
# (lowest entropy). The table compares its neurons with the z-score regions; a small overlap says the two
# definitions of "language-specific" select different neurons. It costs one more pass over the sentences, so the
# offline default leaves it off (`robustness.lape: true` turns it on).

# %%
report.table(lfcore.steps.lape_comparison(lm, sentences, key, p.robustness, p.capture, cache), "lape_overlap",
             index=False)

# %% [markdown]
# ## Table 1: perplexity after switching off each key region
#
# Perplexity is measured on held-out text in each language (offline: NTREX-128 news passages; the paper: XL-Sum),
# cut to `max_tokens` tokens per language when set (equal cost per language) and scored in windows of `seqlen`
# tokens (`perplexity.windows`: overlapping windows with a start token each, or the authors' disjoint ones; see
# the README, "paper vs lfcore"). Each column switches off one set: a language's key region, or a random set
# of the stated share of all neurons. Cells are the % increase over the full model; the last two rows give the
# size of each set.

# %%
texts = lfcore.steps.perplexity_texts(p.perplexity, p.languages, lm.tokenizer)
sets = lfcore.steps.key_region_sets(key, p.perplexity)
table = lfcore.steps.perplexity_table(lm, texts, sets, p.perplexity, cache)
report.table(table, "table1_deactivation", shown=lfcore.evaluate.format_table(table))

# %% [markdown]
# ### Intervals for every cell
#
# A paired bootstrap over evaluation windows: each resample draws windows with replacement and applies the same
# draw to the full and the deactivated model, so window difficulty cancels. Few windows (the laptop default) give
# wide intervals; an interval that includes 0 is no evidence of an effect. Hover over a cell for its interval.

# %%
cells = lfcore.uncertainty.deactivation_intervals(table.attrs["window_nll"], table.attrs["window_tokens"],
                                                  n_boot=p.uncertainty.n_boot, level=p.uncertainty.level,
                                                  seed=p.uncertainty.seed)
report.numbers(**lfcore.steps.table_numbers(table, cells))
report.table(cells, "table1_intervals", index=False)
report.show(lfcore.plots.deactivation_heatmap(table, cells, title=f"Perplexity increase (%) after deactivation: "
                                                                 f"{lm.title}"), "table1_deactivation")

# %% [markdown]
# ## Appendix A: generations with a key region switched off
#
# Greedy continuations of short news prompts, with the full model and with each listed language's key region
# off. The paper saw broken Chinese characters and French drifting into Spanish for BLOOM-7b1; a small model
# shows the effect less cleanly.

# %%
report.table(lfcore.steps.generations(lm, p.generation, sets, cache), "generations")

# %% [markdown]
# ## Reading the result
#
# - A key region is "key" if the diagonal cell rises well above the off-diagonal cells of its column *and* above
#   the random column, with intervals that do not overlap.
# - Languages with larger regions (more distinct scripts or less training data) usually rise most; compare the
#   size row with the diagonal.
# - The paper's setting is `params/paper_bloom7b1.yaml` (BLOOM-7b1, Bible verses, XL-Sum perplexity).
