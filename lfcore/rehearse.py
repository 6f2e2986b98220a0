"""Rehearse a paper params file offline: a local Hugging Face cache that stands in for the hub.

``lfcore reproduce params/paper_bloom_checkpoints.yaml --rehearse`` runs the params file *unchanged* against what
``prepare(params_file, root)`` builds under a temporary ``root``:

- ``hf/hub``: the hub cache layout (``models--ORG--NAME/blobs``, ``refs/<revision>``, ``snapshots/<commit>/``) with
  a tiny random model (``lfcore.tiny``) of the repository's architecture under every hub id and revision the params
  name; tokenizer files where the real repository has them (never on the ``-intermediate`` checkpoint branches),
  and under every ``tokenizer:`` id; the hub datasets the params name (XL-Sum per language config, XStoryCloze per
  language) as parquet files per config and split, at the revision named (XL-Sum: ``refs/convert/parquet``);
- ``hf/datasets``: the same datasets in the Arrow cache, written with ``datasets``' own ``ArrowWriter`` and
  ``DatasetInfo``: offline, ``datasets.load_dataset`` resolves a hub id from this cache (and ignores the revision);
- a byte-for-byte copy of the params file, with a tiny Bible corpus in the christos-c XML layout at the relative
  paths it names (never in the user's tree).

The notebooks then run with ``HF_HUB_OFFLINE=1`` and ``HF_HOME``/``HF_HUB_CACHE``/``HF_DATASETS_CACHE`` pointed
there, so a wrong repo id, revision, missing tokenizer, language config, split, column or path fails here as it
would on the cluster. Sizes follow the params (sentences, documents, windows); only the models and the texts are
tiny. The weights are random: a rehearsal checks the run, never a finding.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from . import tiny
from .cache import PACKAGE
from .corpus import load_corpus
from .models import BUNDLED
from .params import BUNDLED_CORPORA, ParamsError, load_params
from .specs import ModelSpec, Params

# hub id prefix -> (tiny family, the real max_position_embeddings: rotary LLaMA-2 needs it, BLOOM's ALiBi ignores it)
ARCHITECTURES = {"bigscience/bloom": ("bloom", 2048), "meta-llama/Llama-2": ("llama", 4096)}
# real repositories whose branches hold a config and weights only (lfcore's tokenizer error is rehearsed on them)
WITHOUT_TOKENIZER = re.compile(r"^bigscience/bloom-[0-9a-z]+-intermediate$")
XLSUM_SPLITS = ("train", "validation", "test")  # XL-Sum's splits on the hub
WINDOWS = 1  # per language, the perplexity text holds at least this many windows of ``seqlen`` tokens
# the fake models: 2 heads and 2 layers keep a 4096-token window cheap (attention costs heads x layers x seqlen^2)
HIDDEN, LAYERS = 16, 2


def prepare(params_file: str | Path, root: str | Path) -> tuple[Path, dict[str, str]]:
    """Build the fake hub, datasets and corpus a params file needs under ``root``; return the path of the params
    file's copy and the environment to run it in: ``copy, env = prepare("params/paper_llama2.yaml", tmp)``."""
    import datasets
    import transformers

    datasets.disable_progress_bars()  # the writers below would draw one bar per file
    transformers.utils.logging.disable_progress_bar()
    params_file, root = Path(params_file), Path(root).resolve()
    text = params_file.read_text(encoding="utf-8")
    p = load_params(params_file, check=False)
    copy = _params_copy(p, text, params_file.name, root)
    hub, arrow = root / "hf" / "hub", root / "hf" / "datasets"
    _models(p, hub)
    _perplexity_data(p, hub, arrow)
    _accuracy_data(p, hub, arrow)
    env = {"HF_HOME": str(root / "hf"), "HF_HUB_CACHE": str(hub), "HF_DATASETS_CACHE": str(arrow),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return copy, env


# ------------------------------------------------------------------------------------------- hub layout


def put_snapshot(hub: Path, repo_type: str, repo_id: str, revision: str, files: dict[str, bytes]) -> str:
    """Add ``files`` (name -> bytes) to ``repo_id`` at ``revision`` in the hub cache layout: content-addressed
    blobs, ``snapshots/<commit>/<name>`` links to them, ``refs/<revision>`` naming the commit. Files already in
    that revision's snapshot are kept (a model and a tokenizer may share a revision). Returns the commit hash."""
    repo = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / revision
    old = repo / "snapshots" / ref.read_text() if ref.exists() else None
    merged = {str(f.relative_to(old)): f.read_bytes() for f in old.rglob("*") if f.is_file()} if old else {}
    merged.update(files)
    listing = json.dumps(sorted((n, hashlib.sha256(b).hexdigest()) for n, b in merged.items()))
    commit = hashlib.sha1(f"{repo_id}@{revision}:{listing}".encode()).hexdigest()
    for name, data in merged.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return commit


def _saved(obj) -> dict[str, bytes]:
    """The files ``obj.save_pretrained`` writes (a model or a tokenizer), as name -> bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        obj.save_pretrained(tmp)
        return {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}


def _is_hub_id(spec: str) -> bool:
    return not (spec in BUNDLED or spec.startswith(("tiny:", ".", "/", "~")) or spec.endswith(".gguf"))


def _architecture(repo_id: str) -> tuple[str, int]:
    for prefix, arch in ARCHITECTURES.items():
        if repo_id.startswith(prefix):
            return arch
    raise ParamsError(f"the rehearsal has no architecture for hub id {repo_id!r} (it knows "
                      f"{', '.join(ARCHITECTURES)}): add its prefix to lfcore.rehearse.ARCHITECTURES")


def _model_specs(p: Params) -> list[ModelSpec]:
    return [p.model] + [m for name in ("checkpoints", "sizes", "family") for m in getattr(p, name).models]


def _models(p: Params, hub: Path) -> None:
    """A tiny random model under every hub id and revision of the params (weights seeded by id and revision, so
    no two checkpoints are the same), with tokenizer files unless the real repository has none; a tokenizer under
    every ``tokenizer:`` id."""
    for m in _model_specs(p):
        if not _is_hub_id(m.spec):
            continue
        family, positions = _architecture(m.spec)
        revision = m.revision or "main"
        seed = int(hashlib.sha256(f"{m.spec}@{revision}".encode()).hexdigest()[:8], 16)
        files = _saved(tiny.model(family, hidden=HIDDEN, layers=LAYERS, seed=seed, positions=positions))
        if not WITHOUT_TOKENIZER.match(m.spec):
            files.update(_saved(tiny.tokenizer()))
        put_snapshot(hub, "model", m.spec, revision, files)
        if m.tokenizer is not None and _is_hub_id(m.tokenizer):
            put_snapshot(hub, "model", m.tokenizer, m.tokenizer_revision or "main", _saved(tiny.tokenizer()))


# ---------------------------------------------------------------------------------------------- datasets


def _texts(lang: str) -> list[str]:
    """Sentences in ``lang`` from the bundled NTREX sample, else numbered English stand-ins."""
    ntrex = load_corpus("ntrex128")
    if lang in ntrex.languages:
        return [r.text for r in ntrex.records_for(lang)]
    return [f"({lang}) {r.text}" for r in ntrex.records_for("en")]


def put_dataset(hub: Path, arrow: Path, repo_id: str, revision: str, config: str,
                splits: dict[str, list[dict]]) -> None:
    """One config of a hub dataset: parquet files per split in the hub layout (``<config>/<split>/0000.parquet``,
    as the hub's parquet export), and the Arrow cache ``datasets`` reads offline
    (``<namespace>___<name>/<config>/0.0.0/<hash>/<name>-<split>.arrow`` with its ``dataset_info.json``)."""
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from datasets.naming import camelcase_to_snakecase, filenames_for_dataset_split

    tables = {split: datasets.Dataset.from_list(rows) for split, rows in splits.items()}
    files = {}
    for split, ds in tables.items():
        buf = io.BytesIO()
        ds.to_parquet(buf)
        files[f"{config}/{split}/0000.parquet"] = buf.getvalue()
    put_snapshot(hub, "dataset", repo_id, revision, files)
    *namespace, name = repo_id.split("/")
    name = camelcase_to_snakecase(name)
    folder = arrow / "___".join([*namespace, name]) / config / "0.0.0" / hashlib.sha256(
        f"{repo_id}@{revision}".encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    infos = {}
    for split, ds in tables.items():
        (path,) = filenames_for_dataset_split(str(folder), name, split, "arrow", None)
        writer = ArrowWriter(features=ds.features, path=path)
        writer.write_table(ds.data.table)
        n, size = writer.finalize()
        writer.close()
        infos[split] = datasets.SplitInfo(name=split, num_bytes=size, num_examples=n, dataset_name=name)
    first = next(iter(tables.values()))
    datasets.DatasetInfo(features=first.features, config_name=config, dataset_name=name, builder_name=name,
                         splits=datasets.SplitDict(infos, dataset_name=name)).write_to_directory(str(folder))


def _perplexity_data(p: Params, hub: Path, arrow: Path) -> None:
    """An ``hf:`` perplexity source (XL-Sum): each language's config with XL-Sum's splits (and the one named),
    ``documents`` documents each, long enough together for ``WINDOWS`` windows of ``seqlen`` tiny-tokenizer tokens."""
    cfg = p.perplexity
    if not cfg.source.startswith("hf:"):
        return
    tok = tiny.tokenizer()
    splits = dict.fromkeys([*XLSUM_SPLITS, re.sub(r"\[.*\]$", "", cfg.split)])
    for lang in p.languages:
        if lang not in (cfg.hf_configs or {}):
            continue  # params validation names the missing config
        sentences, docs, need = _texts(lang), [], WINDOWS * cfg.seqlen
        per_doc = math.ceil(need / cfg.documents)
        i = 0
        for d in range(cfg.documents):
            text, tokens = [], 0
            while tokens < per_doc:
                text.append(sentences[i % len(sentences)])
                tokens += len(tok(text[-1], add_special_tokens=False).input_ids)
                i += 1
            docs.append({"id": f"{lang}-{d}", "url": f"https://example.org/{lang}/{d}", "title": text[0][:40],
                         "summary": text[0], cfg.text_column: " ".join(text)})
        put_dataset(hub, arrow, cfg.source[3:], cfg.revision or "main", cfg.hf_configs[lang],
                    {split: docs for split in splits})


def _task_setting(task: str, key: str) -> str | None:
    """A top-level setting of lfcore's task base file ``tasks/_<task>_base.yaml`` (its ``!function`` tags aside)."""
    m = re.search(rf"^{key}:\s*(\S+)", (PACKAGE / "tasks" / f"_{task}_base.yaml").read_text(), re.M)
    return m.group(1) if m else None


def _accuracy_data(p: Params, hub: Path, arrow: Path) -> None:
    """The hub dataset of the accuracy task (XStoryCloze; the bundled XCOPA needs none): every language asked and
    English, both splits, four stories each joined by ``story_id`` across languages."""
    task, path = p.accuracy.task, _task_setting(p.accuracy.task, "dataset_path")
    if path is None:
        return
    splits = [s for s in (_task_setting(task, "training_split"), _task_setting(task, "validation_split")) if s]
    for lang in dict.fromkeys([*p.accuracy.languages, "en"]):
        texts = [t[:40] for t in _texts(lang)]  # short: lm-eval scores 2 endings x 4 stories per language and split
        rows = {split: [{"story_id": f"story-{k}-{j}", **{f"input_sentence_{s}": texts[(4 * j + s) % len(texts)]
                                                         for s in range(1, 5)},
                         "sentence_quiz1": texts[(4 * j + 5) % len(texts)],
                         "sentence_quiz2": texts[(4 * j + 6) % len(texts)], "answer_right_ending": 1 + j % 2}
                        for j in range(4)] for k, split in enumerate(splits)}
        put_dataset(hub, arrow, path, "main", lang, rows)


# ------------------------------------------------------------------------------------------------ corpus


def _params_copy(p: Params, text: str, name: str, root: Path) -> Path:
    """The params file, byte for byte, placed under ``root`` so that every relative Bible path it names lands
    inside ``root``; the tiny Bible files written there."""
    files = (p.corpus.files or {}) if p.corpus.source == "bible" else {}
    if p.corpus.source not in BUNDLED_CORPORA and p.corpus.source != "bible":
        raise ParamsError(f"{name}: corpus.source {p.corpus.source!r}: the rehearsal builds a Bible corpus or uses a "
                          f"bundled one ({', '.join(BUNDLED_CORPORA)}), not this source")
    for lang, rel in files.items():
        if Path(rel).expanduser().is_absolute():
            raise ParamsError(f"{name}: corpus.files.{lang}: {rel} is absolute; the rehearsal writes the Bible "
                              f"files at paths relative to the params file, inside its own folder")
    depth = max([sum(part == ".." for part in Path(rel).parts) for rel in files.values()] + [0])
    folder = root.joinpath("params", *["sub"] * max(depth - 1, 0))
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / name
    copy.write_text(text, encoding="utf-8")
    for lang, rel in files.items():
        _bible_xml(folder / rel, lang, p.corpus.n, p.corpus.books)
    return copy


def _bible_xml(path: Path, lang: str, n: int, books: list[str] | None) -> None:
    """A christos-c bible-corpus file: ``cesDoc/text/body/div[book]/div[chapter]/seg[verse]``, ``n`` + 5 verses
    (ids ``b.<BOOK>.1.<verse>``) spread over ``books`` (default GEN), texts from the bundled NTREX sample."""
    ns = "http://www.xces.org/schema/2003"
    doc = ET.Element("cesDoc", {"version": "4.0", "type": "text", "xmlns": ns})
    body = ET.SubElement(ET.SubElement(doc, "text"), "body", {"lang": lang, "id": lang})
    books = [b.removeprefix("b.") for b in books] if books else ["GEN"]
    texts, chapters = _texts(lang), {}
    for i in range(n + 5):
        book = books[i % len(books)]
        if book not in chapters:
            div = ET.SubElement(body, "div", {"id": f"b.{book}", "type": "book"})
            chapters[book] = ET.SubElement(div, "div", {"id": f"b.{book}.1", "type": "chapter"})
        seg = ET.SubElement(chapters[book], "seg", {"id": f"b.{book}.1.{i // len(books) + 1}", "type": "verse"})
        seg.text = texts[i % len(texts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(doc).write(path, encoding="utf-8", xml_declaration=True)

