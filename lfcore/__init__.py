"""lfcore: linguistic regions and semantic alignment in multilingual LLMs.

Modules: ``core`` (the model-free labelled data types: activations, neuron sets); the math on them,
which never touches a model: ``metrics`` (similarity map, LRDS, SADS), ``regions`` (key linguistic regions),
``uncertainty``, ``diagnostics``, ``robustness``, ``switching`` (switch rates), ``plots``; the model side:
``models`` (loading, neuron-site table), ``convert`` (GGUF conversion, bundled weights), ``corpus`` (parallel
text), ``languages`` (ISO 639-1 codes), ``hooks`` (context-managed hooks), ``capture`` (one streaming pass:
pooled activations, firing counts), ``intervene`` (zero, scale, set, add or patch neurons; ``deactivate`` is its
zero case), ``perplexity`` (windows, chunked loss), ``evaluate`` (Table 1, lm-eval tasks, generations),
``langid`` (language of a text), ``steering`` (steering and patching experiments), ``cache`` (content-keyed
results); for the reports: ``specs`` (the params schema, notebook table), ``params`` (YAML parameter sets:
protocols, checks, loading), ``steps`` (cached steps the notebooks call), ``series`` (checkpoint and size
series), ``report`` (figures, tables, HTML), ``runner`` (papermill runner), ``cli`` (the ``lfcore`` command),
``lock`` (one run per output folder), ``rehearse`` (an offline stand-in for the hub) and ``jobs`` (the steps as
cluster jobs).
Import the module you need; nothing heavy happens at import time.
"""

__version__ = "0.1.0"
