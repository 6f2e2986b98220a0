"""Rehearse a paper params file offline: ``copy, env = prepare(params_file, root)`` builds under ``root`` a local
Hugging Face cache that stands in for the hub (tiny random models under every hub id and revision the params name,
tokenizer files where the real repository has them, the hub datasets as parquet files and in the Arrow cache that
``datasets`` reads offline) and a byte-for-byte copy of the params file with tiny Bible files at the paths it names.
Run there with ``HF_HUB_OFFLINE=1``, a wrong id, revision, tokenizer, config, split, column or path fails as it would
on the cluster; the weights are random, so a rehearsal checks the run, never a finding (README: "Rehearsing").
"""
from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from huggingface_hub.file_download import repo_folder_name

from . import tiny
from .cache import PACKAGE
from .corpus import load_corpus
from .models import is_local
from .params import BUNDLED_CORPORA, ParamsError, load_params
from .specs import Params

# hub id prefix -> (tiny family, the real max_position_embeddings: rotary LLaMA-2 needs it, BLOOM's ALiBi ignores it)
ARCHITECTURES = {"bigscience/bloom": ("bloom", 2048), "meta-llama/Llama-2": ("llama", 4096)}
# real repositories whose branches hold a config and weights only (lfcore's tokenizer error is rehearsed on them)
WITHOUT_TOKENIZER = re.compile(r"^bigscience/bloom-[0-9a-z]+-intermediate$")
XLSUM_SPLITS = ("train", "validation", "test")  # XL-Sum's splits on the hub


def prepare(params_file: str | Path, root: str | Path) -> tuple[Path, dict[str, str]]:
    """Build the fake hub, datasets and corpus a params file needs under ``root``; return the path of the params
    file's copy and the environment to run it in: ``copy, env = prepare("params/paper_llama2.yaml", tmp)``."""
    import datasets
    import transformers

    datasets.disable_progress_bars()  # the writers below would draw one bar per file
    transformers.utils.logging.disable_progress_bar()
    params_file, root = Path(params_file), Path(root).resolve()
    p = load_params(params_file, check=False)
    copy = _params_copy(p, params_file, root)
    hub, arrow = root / "hf" / "hub", root / "hf" / "datasets"
    _models(p, hub)
    _perplexity_data(p, hub, arrow)
    _accuracy_data(p, hub, arrow)
    return copy, {"HF_HOME": str(root / "hf"), "HF_HUB_CACHE": str(hub), "HF_DATASETS_CACHE": str(arrow),
                  "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def put_snapshot(hub: Path, repo_type: str, repo_id: str, revision: str, files: dict[str, bytes]) -> None:
    """Add ``files`` (name -> bytes) to ``repo_id`` at ``revision`` in the hub cache layout: content-addressed
    blobs, ``snapshots/<commit>/<name>`` links to them, ``refs/<revision>`` naming the commit (one per revision, so
    a model and a tokenizer put at the same revision share a snapshot)."""
    repo = hub / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    commit, ref = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest(), repo / "refs" / revision
    for name, data in files.items():
        blob, link = repo / "blobs" / hashlib.sha256(data).hexdigest(), repo / "snapshots" / commit / name
        for folder in (blob.parent, link.parent, ref.parent):
            folder.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref.write_text(commit)


def _saved(obj) -> dict[str, bytes]:
    """The files ``obj.save_pretrained`` writes (a model or a tokenizer), as name -> bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        obj.save_pretrained(tmp)
        return {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}


def _models(p: Params, hub: Path) -> None:
    """A tiny random model under every hub id and revision of the params (weights seeded by id and revision, so
    no two checkpoints are the same), with tokenizer files unless the real repository has none; a tokenizer under
    every ``tokenizer:`` id."""
    for m in [p.model, *p.checkpoints.models, *p.sizes.models, *p.family.models]:
        if is_local(m.spec):
            continue
        arch = next((arch for prefix, arch in ARCHITECTURES.items() if m.spec.startswith(prefix)), None)
        if arch is None:
            raise ParamsError(f"the rehearsal has no architecture for hub id {m.spec!r} (it knows "
                              f"{', '.join(ARCHITECTURES)}): add its prefix to lfcore.rehearse.ARCHITECTURES")
        revision = m.revision or "main"
        seed = int(hashlib.sha256(f"{m.spec}@{revision}".encode()).hexdigest()[:8], 16)
        # 2 heads and 2 layers keep a 4096-token window cheap (attention costs heads x layers x seqlen^2)
        files = _saved(tiny.model(arch[0], hidden=16, layers=2, seed=seed, positions=arch[1]))
        if not WITHOUT_TOKENIZER.match(m.spec):
            files.update(_saved(tiny.tokenizer()))
        put_snapshot(hub, "model", m.spec, revision, files)
        if m.tokenizer is not None and not is_local(m.tokenizer):
            put_snapshot(hub, "model", m.tokenizer, m.tokenizer_revision or "main", _saved(tiny.tokenizer()))


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

    *namespace, name = repo_id.split("/")
    name = camelcase_to_snakecase(name)
    folder = arrow / "___".join([*namespace, name]) / config / "0.0.0" / hashlib.sha256(
        f"{repo_id}@{revision}".encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    files, infos = {}, {}
    for split, rows in splits.items():  # every split of a config has the same columns
        ds = datasets.Dataset.from_list(rows)
        buf = io.BytesIO()
        ds.to_parquet(buf)
        files[f"{config}/{split}/0000.parquet"] = buf.getvalue()
        (path,) = filenames_for_dataset_split(str(folder), name, split, "arrow", None)
        with ArrowWriter(features=ds.features, path=path) as writer:
            writer.write_table(ds.data.table)
            n, size = writer.finalize()
        infos[split] = datasets.SplitInfo(name=split, num_bytes=size, num_examples=n, dataset_name=name)
    put_snapshot(hub, "dataset", repo_id, revision, files)
    datasets.DatasetInfo(features=ds.features, config_name=config, dataset_name=name, builder_name=name,
                         splits=datasets.SplitDict(infos, dataset_name=name)).write_to_directory(str(folder))


def _perplexity_data(p: Params, hub: Path, arrow: Path) -> None:
    """An ``hf:`` perplexity source (XL-Sum): each language's config with XL-Sum's splits (and the one named),
    ``documents`` documents each, long enough together for one window of ``seqlen`` tiny-tokenizer tokens."""
    cfg = p.perplexity
    if not cfg.source.startswith("hf:"):
        return
    tok, per_doc = tiny.tokenizer(), math.ceil(cfg.seqlen / cfg.documents)
    splits = dict.fromkeys([*XLSUM_SPLITS, re.sub(r"\[.*\]$", "", cfg.split)])
    for lang in p.languages:
        if lang not in (cfg.hf_configs or {}):
            continue  # params validation names the missing config
        sentences, docs = itertools.cycle(_texts(lang)), []
        for d in range(cfg.documents):
            text, tokens = [], 0
            while tokens < per_doc:
                text.append(next(sentences))
                tokens += len(tok(text[-1], add_special_tokens=False).input_ids)
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


def _params_copy(p: Params, params_file: Path, root: Path) -> Path:
    """The params file, byte for byte, placed under ``root`` so that every relative Bible path it names lands
    inside ``root``; the tiny Bible files written there."""
    files = (p.corpus.files or {}) if p.corpus.source == "bible" else {}
    if p.corpus.source not in (*BUNDLED_CORPORA, "bible"):
        raise ParamsError(f"{params_file.name}: corpus.source {p.corpus.source!r}: the rehearsal builds a Bible "
                          f"corpus or uses a bundled one ({', '.join(BUNDLED_CORPORA)}), not this source")
    for lang, rel in files.items():
        if Path(rel).expanduser().is_absolute():
            raise ParamsError(f"{params_file.name}: corpus.files.{lang}: {rel} is absolute; the rehearsal writes the "
                              f"Bible files at paths relative to the params file, inside its own folder")
    depth = max([sum(part == ".." for part in Path(rel).parts) for rel in files.values()] + [0])
    folder = root.joinpath("params", *["sub"] * max(depth - 1, 0))
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / params_file.name
    copy.write_bytes(params_file.read_bytes())
    for lang, rel in files.items():
        _bible_xml(folder / rel, lang, p.corpus.n, p.corpus.books)
    return copy


def _bible_xml(path: Path, lang: str, n: int, books: list[str] | None) -> None:
    """A christos-c bible-corpus file: ``cesDoc/text/body/div[book]/div[chapter]/seg[verse]``, ``n`` + 5 verses
    (ids ``b.<BOOK>.1.<verse>``) spread over ``books`` (default GEN), texts from the bundled NTREX sample."""
    ns = "http://www.xces.org/schema/2003"
    doc = ET.Element("cesDoc", {"version": "4.0", "type": "text", "xmlns": ns})
    body = ET.SubElement(ET.SubElement(doc, "text"), "body", {"lang": lang, "id": lang})
    books, texts = [b.removeprefix("b.") for b in books] if books else ["GEN"], _texts(lang)
    for first, book in enumerate(books[:n + 5]):  # verse i goes to book i % len(books)
        div = ET.SubElement(body, "div", {"id": f"b.{book}", "type": "book"})
        chapter = ET.SubElement(div, "div", {"id": f"b.{book}.1", "type": "chapter"})
        for i in range(first, n + 5, len(books)):
            seg = ET.SubElement(chapter, "seg", {"id": f"b.{book}.1.{i // len(books) + 1}", "type": "verse"})
            seg.text = texts[i % len(texts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(doc).write(path, encoding="utf-8", xml_declaration=True)

