"""lm-evaluation-harness tasks shipped as package data (YAML + ``utils.py``).

Load them with ``lfcore.evaluate.task_manager()`` (a ``TaskManager`` whose ``include_path`` is this folder).

- ``xcopa_xl_{en,id,vi,zh}`` (group ``xcopa_xl``): offline, from the bundled XCOPA sample. The premise is in
  language X, the connector is English (" because" for a cause question, " therefore" for an effect question,
  as in the harness's ``copa``/``xcopa`` tasks) and the two choices are the English COPA alternatives of the
  same item (joined by id), so the model must carry the premise's meaning across languages.
- ``xstorycloze_xl_{ar,en,es,eu,hi,id,my,ru,sw,te,zh}`` (group ``xstorycloze_xl``, all 11 languages of
  XStoryCloze): needs network (``juletxara/xstory_cloze``) or a cache of it (``lfcore reproduce --rehearse``). Appendix B of the paper: the four story sentences in language X, then
  "The ending in English:", and the two English endings of the same story (joined by ``story_id``).
"""
