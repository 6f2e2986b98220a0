"""Parallel text as labelled records: (sentence_id, lang, text), loaders, and aligned, seeded selection. Every
record is addressed by its label, never by its position: metrics look rows up by (sentence id, language).
"""
from __future__ import annotations

import hashlib
import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .languages import check_language, suggest


def _names(items: list, show: int = 5) -> str:
    """'a, b, c' for up to `show` items, then '... (N in all)'."""
    text = ", ".join(str(i) for i in items[:show])
    return text + (f", ... ({len(items)} in all)" if len(items) > show else "")


@dataclass(frozen=True)
class Record:
    """One sentence in one language."""
    sentence_id: str
    lang: str
    text: str


class ParallelCorpus:
    """Records labelled by (sentence_id, lang), validated on construction: ValueError on empty text, a duplicate
    (sentence_id, lang) pair or an unknown language code. ``languages`` and ``ids`` are in order of first appearance.
    `where` (optional, one per record, e.g. "data.jsonl:12") points error messages at their source.
    """

    def __init__(self, records: Iterable[Record], name: str = "corpus", meta: dict | None = None,
                 where: list[str] | None = None):
        self.records, self.name, self.meta = list(records), name, dict(meta or {})
        where = where or [f"record {i}" for i in range(len(self.records))]
        if len(where) != len(self.records):
            raise ValueError(f"where has {len(where)} entries for {len(self.records)} records")
        first, bad_langs, empty, dupes, seen = {}, [], [], [], {}
        for rec, loc in zip(self.records, where):
            if rec.lang not in first:
                first[rec.lang] = loc
                try:
                    check_language(rec.lang)
                except ValueError as err:
                    bad_langs.append(f"{loc}: {err}")
            key = (rec.sentence_id, rec.lang)
            if not isinstance(rec.text, str) or not rec.text.strip():
                empty.append(f"{loc} {key}")
            if key in seen:
                dupes.append(f"{key} at {seen[key]} and {loc}")
            seen.setdefault(key, loc)
        if bad_langs:
            raise ValueError(f"{name}: {len(bad_langs)} unknown language code(s):\n  " + "\n  ".join(bad_langs[:5]))
        if empty:
            raise ValueError(f"{name}: empty, whitespace-only or non-string text in {len(empty)} record(s): "
                             f"{_names(empty)}; fill in the text or drop these records")
        if dupes:
            raise ValueError(f"{name}: duplicate (sentence_id, lang) pair(s): {_names(dupes)}; "
                             "each id may appear once per language")
        self._text = {(r.sentence_id, r.lang): r.text for r in self.records}
        self.languages = list(first)
        self.ids = list(dict.fromkeys(r.sentence_id for r in self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __repr__(self) -> str:
        return (f"ParallelCorpus(name={self.name!r}, {len(self.ids)} ids x {len(self.languages)} langs "
                f"{self.languages}, {len(self)} records)")

    def _requested(self, langs: Iterable[str] | None) -> list[str]:
        """`langs` as a list (default: all), each in the corpus and named once."""
        langs = [langs] if isinstance(langs, str) else list(self.languages if langs is None else langs)
        missing = [lang for lang in langs if lang not in self.languages]
        if missing:
            hints = [h for lang in missing for h in suggest(str(lang)) if h in self.languages]
            raise ValueError(f"{self.name}: language(s) {missing} not in the corpus; available: {self.languages}"
                             + (f"; did you mean {' or '.join(map(repr, hints))}?" if hints else ""))
        if len(set(langs)) != len(langs):
            raise ValueError(f"language list {langs} names a language twice")
        return langs

    def text(self, sentence_id: str, lang: str) -> str:
        """The text of one sentence in one language; ValueError if that pair is absent."""
        if (sentence_id, lang) not in self._text:
            raise ValueError(f"{self.name}: {sentence_id} has no {lang!r}")
        return self._text[(sentence_id, lang)]

    def records_for(self, lang: str) -> list[Record]:
        """All records of one language, in corpus order."""
        self._requested([lang])
        return [r for r in self.records if r.lang == lang]

    def select(self, langs: Iterable[str] | None = None, n: int | None = None, seed: int = 0) -> ParallelCorpus:
        """Keep `langs` (default: all) and the ids present in all of them; optionally draw `n` of those ids.

        The draw is `random.Random(seed).sample(sorted(ids), n)`, so it depends only on the set of complete ids,
        not on record order; kept records stay in corpus order. Returns a new ParallelCorpus.
        """
        langs = self._requested(langs)
        ids = [i for i in self.ids if all((i, lang) in self._text for lang in langs)]
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"n must be a non-negative integer or None, got {n!r}")
            if n > len(ids):
                lack = {lang: [i for i in self.ids if (i, lang) not in self._text] for lang in langs}
                per_lang = "; ".join(f"{len(v)} lack {lang!r} ({_names(v, 3)})" for lang, v in lack.items() if v)
                raise ValueError(f"{self.name}: asked for n={n} ids but only {len(ids)} of {len(self.ids)} have all "
                                 f"of {langs}" + (f": {per_lang}" if per_lang else ""))
            keep = set(random.Random(seed).sample(sorted(ids), n))
            ids = [i for i in ids if i in keep]
        keep = set(ids)
        records = [r for r in self.records if r.sentence_id in keep and r.lang in langs]
        meta = {**self.meta, "select": {"langs": langs, "n": n, "seed": seed}}
        return ParallelCorpus(records, name=self.name, meta=meta)

    def fingerprint(self) -> str:
        """sha256 hex digest over the sorted (id, lang, text) triples: equal content gives an equal key."""
        triples = sorted((r.sentence_id, r.lang, r.text) for r in self.records)
        return hashlib.sha256(json.dumps(triples, ensure_ascii=False).encode("utf-8")).hexdigest()


def _read_lines(path) -> tuple[str, list[str]]:
    """(display name, lines) of a text file or importlib resource; splits on "\\n" only (text may hold U+2028)."""
    p = path if hasattr(path, "read_text") else Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8"
                         ) from None
    return str(path), [line.rstrip("\r") for line in text.split("\n")]


def sentence_id(value, where: str) -> str:
    """``value`` as a sentence id (a string or an integer, as text); ``ValueError`` naming ``where`` for a null,
    empty, bool, float or other value, which ``str`` would silently turn into an id like "None" or "1.0"."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{where}: sentence id {value!r} ({type(value).__name__}) is not a non-empty string or an "
                     f"integer; give every sentence an id")


def from_jsonl(path, id_key: str = "id", lang_key: str = "lang", text_key: str = "text",
               name: str | None = None) -> ParallelCorpus:
    """Long-format JSON lines, one {id, lang, text} object per line (other keys ignored); errors name file:line."""
    src, lines = _read_lines(path)
    records, where = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{src}:{n}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{src}:{n}: expected a JSON object, got {type(row).__name__}")
        for key, arg in ((id_key, "id_key"), (lang_key, "lang_key"), (text_key, "text_key")):
            if key not in row:
                raise ValueError(f"{src}:{n}: missing key {key!r} (keys: {sorted(row)}); pass {arg}= to use another")
        records.append(Record(sentence_id(row[id_key], f"{src}:{n}: {id_key!r}"), row[lang_key], row[text_key]))
        where.append(f"{src}:{n}")
    return ParallelCorpus(records, name=name or Path(src).stem, meta={"source": src}, where=where)


def from_tsv(path, name: str | None = None) -> ParallelCorpus:
    """Tab-separated text: long (header `id, lang, text`) or wide (header `id, en, fr, ...`, one column per language).

    In the wide format an empty cell means "no translation" and is left out. Errors name file:line.
    """
    src, lines = _read_lines(path)
    if not lines[0].strip():
        raise ValueError(f"{src}: empty file; expected a header 'id<TAB>lang<TAB>text' or 'id<TAB>en<TAB>fr...'")
    header = lines[0].split("\t")
    long = header == ["id", "lang", "text"]
    if not long:
        if header[0] != "id" or len(header) < 2:
            raise ValueError(f"{src}:1: header must be 'id<TAB>lang<TAB>text' (long format) or 'id<TAB><lang>"
                             f"<TAB><lang>...' (wide format), got {header}")
        for lang in header[1:]:
            try:
                check_language(lang)
            except ValueError as err:
                raise ValueError(f"{src}:1: wide-format column: {err}") from None
    records, where = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"{src}:{n}: {len(cells)} tab-separated fields, the header has {len(header)}")
        sid = sentence_id(cells[0], f"{src}:{n}: column 'id'")
        if long:
            records.append(Record(sid, *cells[1:]))
            where.append(f"{src}:{n}")
        else:
            for lang, cell in zip(header[1:], cells[1:]):
                if cell.strip():
                    records.append(Record(sid, lang, cell))
                    where.append(f"{src}:{n} column {lang!r}")
    return ParallelCorpus(records, name=name or Path(src).stem, meta={"source": src}, where=where)


def from_bible_xml(files: Mapping[str, str | Path], books: Iterable[str] | None = None,
                   name: str = "bible") -> ParallelCorpus:
    """The christos-c/bible-corpus XML format: `files` maps a language code to that language's file.

    Each `<seg id="b.GEN.1.1">` becomes a record with the seg id as sentence_id and whitespace-collapsed text.
    `books` keeps only those book codes (e.g. ["GEN", "MAT"]). Empty verses are skipped and counted in
    meta["skipped_empty"][lang].
    """
    books = None if books is None else [books] if isinstance(books, str) else list(books)
    wanted = None if books is None else {b.removeprefix("b.") for b in books}
    records, where, skipped = [], [], {}
    for lang, path in files.items():
        check_language(lang)
        skipped[lang], seen_books = 0, set()
        try:
            for _, elem in ET.iterparse(path, events=("end",)):
                if elem.tag.rsplit("}", 1)[-1] != "seg" or "id" not in elem.attrib:
                    continue
                sid = elem.attrib["id"]
                book = sid.split(".")[1] if sid.count(".") >= 1 else ""
                seen_books.add(book)
                if wanted is None or book in wanted:
                    text = " ".join("".join(elem.itertext()).split())
                    if text:
                        records.append(Record(sid, lang, text))
                        where.append(f"{path} (seg {sid!r})")
                    else:
                        skipped[lang] += 1
                elem.clear()
        except ET.ParseError as err:
            raise ValueError(f"{path}:{err.position[0]}: not well-formed XML ({err})") from None
        if wanted is not None and wanted - seen_books:
            raise ValueError(f"{path}: no book(s) {sorted(wanted - seen_books)}; books in the file: "
                             f"{_names(sorted(seen_books), 80)}")
    meta = {"source": {lang: str(p) for lang, p in files.items()}, "books": books, "skipped_empty": skipped}
    return ParallelCorpus(records, name=name, meta=meta, where=where)


def from_hf_dataset(path, name: str | None = None, split: str = "train", langs: Iterable[str] | None = None,
                    id_column: str | None = None, text_columns: Mapping[str, str] | None = None,
                    **load_kwargs) -> ParallelCorpus:
    """A Hugging Face dataset: a hub id (passed to `datasets.load_dataset(path, name, split=split, **load_kwargs)`),
    a local .json/.jsonl/.csv file, or an already-loaded `datasets.Dataset` / `DatasetDict`.

    Text comes from a `translation` dict column ({"en": ..., "fr": ...}, as in `bible_para` and OPUS sets) or,
    with `text_columns={"en": "column", ...}`, one column per language. `langs` keeps only those languages.
    Ids come from `id_column`, else "row-<i>" (OPUS pair datasets number rows per language pair: ids from two
    pairs do not name the same sentence).
    """
    import datasets

    if isinstance(path, datasets.DatasetDict):
        ds, label = path[split], f"dataset[{split!r}]"
    elif isinstance(path, datasets.Dataset):
        ds, label = path, "dataset"
    elif Path(str(path)).suffix in (".json", ".jsonl", ".csv") and Path(str(path)).is_file():
        kind = "csv" if Path(path).suffix == ".csv" else "json"
        ds, label = datasets.load_dataset(kind, data_files=str(path), split=split, **load_kwargs), str(path)
    else:
        label = str(path) + (f" ({name})" if name else "")
        try:
            ds = datasets.load_dataset(str(path), name, split=split, **load_kwargs)
        except RuntimeError as e:
            if "scripts are no longer supported" not in str(e):
                raise
            raise ValueError(f"{label}: the dataset is a loading script, which datasets {datasets.__version__} no "
                             "longer runs; load the hub's parquet export instead: revision: refs/convert/parquet "
                             "(in a params file, beside the source)") from None
    columns = list(ds.column_names)
    for col in [id_column] + list((text_columns or {}).values()):
        if col is not None and col not in columns:
            raise ValueError(f"{label}: no column {col!r}; columns are {columns}")
    ids = ([sentence_id(v, f"{label}: row {i}, column {id_column!r}") for i, v in enumerate(ds[id_column])]
           if id_column else [f"row-{i}" for i in range(len(ds))])
    if text_columns:
        per_lang = {lang: list(ds[col]) for lang, col in text_columns.items()}
    elif "translation" in columns:
        rows = list(ds["translation"])
        per_lang = {lang: [row.get(lang) for row in rows] for lang in (rows[0] if rows else {})}
    else:
        raise ValueError(f"{label}: no 'translation' column; pass text_columns={{'en': '<column>', ...}} "
                         f"(columns are {columns})")
    langs = list(per_lang) if langs is None else list(langs)
    unknown = [lang for lang in langs if lang not in per_lang]
    if unknown:
        raise ValueError(f"{label}: language(s) {unknown} not in the dataset; available: {list(per_lang)}")
    records = [Record(sid, lang, per_lang[lang][i]) for i, sid in enumerate(ids) for lang in langs]
    where = [f"{label} row {i}" for i in range(len(ids)) for _ in langs]
    meta = {"source": label, "config": name, "split": split}
    return ParallelCorpus(records, name=name or label, meta=meta, where=where)


def _bundled(file: str, name: str) -> ParallelCorpus:
    corpus = from_jsonl(resources.files("lfcore.data") / file, name=name)
    corpus.meta.update(source=f"lfcore.data/{file}", license="CC BY-SA 4.0 (NTREX-128; see lfcore/data/README.md)")
    return corpus


def bundled_ntrex() -> ParallelCorpus:
    """The bundled NTREX-128 sample: 400 sentence ids x 9 languages (ar zh en fr hi id pt es vi)."""
    return _bundled("ntrex128_9langs.jsonl", "ntrex128")


def bundled_passages() -> ParallelCorpus:
    """The bundled NTREX-128 news passages for perplexity: 61 passage ids x 9 languages, lines joined by "\\n"."""
    return _bundled("ntrex128_passages_9langs.jsonl", "ntrex128-passages")


_FORMS = ("'ntrex128' or 'ntrex128-passages' (bundled); a .jsonl/.json or .tsv file; 'hf:<dataset id>' "
          "(kw go to from_hf_dataset); a {lang: path} mapping of Bible XML files; or a folder of Bible XML files "
          "with files={lang: file name}")


def load_corpus(spec, **kw) -> ParallelCorpus:
    """Load a ParallelCorpus from a short spec (see _FORMS); keyword arguments go to the chosen loader."""
    if isinstance(spec, Mapping):
        return from_bible_xml(spec, **kw)
    if spec == "ntrex128" or spec == "ntrex128-passages":
        return bundled_ntrex() if spec == "ntrex128" else bundled_passages()
    if isinstance(spec, str) and spec.startswith("hf:"):
        return from_hf_dataset(spec[3:], **kw)
    if not isinstance(spec, (str, Path)):
        raise ValueError(f"cannot load a corpus from {type(spec).__name__}; accepted: {_FORMS}")
    path = Path(spec)
    if path.is_dir():
        files = kw.pop("files", None)
        if not files:
            found = _names(sorted(p.name for p in path.glob("*.xml")), 10)
            raise ValueError(f"{path} is a folder: pass files={{'en': 'English.xml', ...}} naming the Bible XML "
                             f"file for each language (found: {found or 'no .xml files'})")
        return from_bible_xml({lang: path / f for lang, f in files.items()}, **kw)
    if not path.is_file():
        raise ValueError(f"no such file or folder: {path}; accepted: {_FORMS}")
    if path.suffix in (".jsonl", ".json"):
        return from_jsonl(path, **kw)
    if path.suffix == ".tsv":
        return from_tsv(path, **kw)
    raise ValueError(f"don't know how to read {path.name!r}; accepted: {_FORMS}")
