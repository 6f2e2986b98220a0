"""lfcore: linguistic regions and semantic alignment in multilingual LLMs.

Modules: ``models`` (loading, neuron-site table), ``corpus`` (parallel text), ``hooks`` (context-managed
hooks), ``capture`` (pooled activations), ``metrics`` (similarity map, LRDS, SADS), ``regions`` (key
linguistic regions), ``intervene`` (zero, scale, set, add or patch neurons; ``deactivate`` is its zero case),
``evaluate``, ``langid`` (language of a text), ``steering`` (steering and patching experiments), ``switching``
(switch rates), ``plots``, ``cache``; for the reports: ``params`` (YAML
parameter sets), ``steps`` (cached steps the notebooks call), ``series`` (checkpoint and size series), ``report``
(figures, tables, HTML), ``runner`` (papermill runner, ``lfcore`` CLI) and ``jobs`` (the steps as cluster jobs).
Import the module you need; nothing heavy happens at import time.
"""

__version__ = "0.1.0"
