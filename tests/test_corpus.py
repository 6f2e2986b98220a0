"""Parallel corpus: bundled data, seeded selection by label, loaders, and every message in the bad-input catalogue."""
from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest

from lfcore.corpus import (ParallelCorpus, Record, bundled_ntrex, bundled_passages, from_bible_xml, from_hf_dataset,
                           from_jsonl, from_tsv, load_corpus)
from lfcore.languages import ISO639_1, check_language

FIXTURES = Path(__file__).parent / "fixtures"
BIBLE = {lang: FIXTURES / f"bible_{lang}.xml" for lang in ("en", "fr", "zh")}
NINE = {"ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"}


@pytest.fixture(scope="module")
def ntrex():
    return bundled_ntrex()


def small(rows) -> ParallelCorpus:
    return ParallelCorpus([Record(*row) for row in rows], name="small")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- bundled data -------------------------------------------------------------------------------------------------

def test_bundled_ntrex_is_400_ids_by_9_languages(ntrex):
    assert ntrex.name == "ntrex128"
    assert set(ntrex.languages) == NINE and len(ntrex.ids) == 400 and len(ntrex) == 400 * 9
    assert ntrex.select().ids == ntrex.ids  # every id in every language
    assert ntrex.text("ntrex128-0017", "en").startswith("Macedonians go to polls")
    assert [r.sentence_id for r in ntrex.records_for("zh")] == ntrex.ids


def test_bundled_passages_are_61_by_9_with_line_breaks():
    passages = bundled_passages()
    assert passages.name == "ntrex128-passages"
    assert set(passages.languages) == NINE and len(passages.ids) == 61 and len(passages) == 61 * 9
    assert passages.select().ids == passages.ids
    assert "\n" in passages.text("ntrex128-p000", "en")


def test_iso_table_and_language_codes():
    assert len(ISO639_1) == 183 and ISO639_1["zh"] == "Chinese"
    for code in ("en", "zh-CN", "pt-BR", "zh-Hans", "zh-Hant-TW", "es-419"):
        assert check_language(code) == code
    for bad, hint in (("chinese", "'zh'"), ("EN", "'en'"), ("zh_CN", "'zh-CN'"), ("eng", "'en'"), ("Spanish", "'es'")):
        with pytest.raises(ValueError, match=f"unknown language code '{bad}'; did you mean {hint}"):
            check_language(bad)


# --- selection by label -------------------------------------------------------------------------------------------

def test_select_is_seeded_and_independent_of_record_order(ntrex):
    langs = ["en", "zh", "ar"]
    a = ntrex.select(langs, n=50, seed=3)
    shuffled = list(ntrex)
    random.Random(1).shuffle(shuffled)
    b = ParallelCorpus(shuffled, name="shuffled").select(langs, n=50, seed=3)
    assert set(a.ids) == set(b.ids) and len(a.ids) == 50
    assert a.fingerprint() == b.fingerprint()
    assert a.ids == [i for i in ntrex.ids if i in set(a.ids)]  # corpus order kept
    assert set(a.languages) == set(langs) and len(a) == 150
    assert a.select(langs).ids == a.ids
    assert ntrex.select(langs, n=50, seed=3).ids == a.ids
    assert set(ntrex.select(langs, n=50, seed=4).ids) != set(a.ids)
    assert a.meta["select"] == {"langs": langs, "n": 50, "seed": 3}


def test_select_keeps_only_ids_complete_in_the_requested_languages():
    corpus = small([("s1", "en", "a"), ("s1", "fr", "b"), ("s2", "en", "c"), ("s3", "fr", "d"), ("s3", "en", "e")])
    assert corpus.select(["en", "fr"]).ids == ["s1", "s3"]
    assert corpus.select(["en"]).ids == ["s1", "s2", "s3"]
    assert corpus.select().languages == ["en", "fr"]


def test_fingerprint_depends_on_content_not_order(ntrex):
    records = list(ntrex)
    assert ParallelCorpus(records[::-1]).fingerprint() == ntrex.fingerprint()
    changed = records[:-1] + [Record(records[-1].sentence_id, records[-1].lang, records[-1].text + "!")]
    assert ParallelCorpus(changed).fingerprint() != ntrex.fingerprint()


def test_records_round_trip_through_jsonl(tmp_path, ntrex):
    sub = ntrex.select(["en", "hi"], n=5)
    path = write(tmp_path / "sub.jsonl", "\n".join(json.dumps(asdict(r), ensure_ascii=False) for r in sub))
    back = from_jsonl(path, id_key="sentence_id")
    assert list(back) == list(sub) and back.meta["source"] == str(path)


# --- the bad-input catalogue --------------------------------------------------------------------------------------

def test_where_must_label_every_record():  # a ValueError, not an assert: python -O must not skip it
    with pytest.raises(ValueError, match="where has 1 entries for 2 records"):
        ParallelCorpus([Record("a", "en", "x"), Record("b", "en", "y")], where=["f.jsonl:1"])


def test_missing_translation_is_named():
    corpus = small([("ntrex128-0017", "en", "a"), ("ntrex128-0020", "en", "b"), ("ntrex128-0020", "fr", "c")])
    assert corpus.select(["en", "fr"]).ids == ["ntrex128-0020"]
    with pytest.raises(ValueError, match="ntrex128-0017 has no 'fr'"):
        corpus.text("ntrex128-0017", "fr")


def test_empty_text_names_file_and_line(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"id": "s1", "lang": "en", "text": "hi"}\n'
                                       '{"id": "s1", "lang": "fr", "text": "   "}\n')
    with pytest.raises(ValueError, match=r"whitespace-only .*c\.jsonl:2 \('s1', 'fr'\)"):
        from_jsonl(path)


def test_duplicate_pair_names_both_lines(tmp_path):
    path = write(tmp_path / "d.tsv", "id\tlang\ttext\ns1\ten\ta\ns2\ten\tb\ns1\ten\tc\n")
    with pytest.raises(ValueError, match=r"duplicate .*\('s1', 'en'\) at .*d\.tsv:2 and .*d\.tsv:4"):
        from_tsv(path)


def test_unknown_language_code_suggests_one(tmp_path):
    path = write(tmp_path / "u.jsonl", '{"id": "s1", "lang": "en", "text": "a"}\n'
                                       '{"id": "s1", "lang": "chinese", "text": "b"}\n')
    with pytest.raises(ValueError, match=r"u\.jsonl:2: unknown language code 'chinese'; did you mean 'zh'"):
        from_jsonl(path)


def test_n_too_large_says_how_many_and_which_lack(ntrex):
    corpus = small([("s1", "en", "a"), ("s1", "fr", "b"), ("s2", "en", "c"), ("s3", "en", "d")])
    with pytest.raises(ValueError, match=r"n=3 ids but only 1 of 3 .*2 lack 'fr' \(s2, s3\)"):
        corpus.select(["en", "fr"], n=3)
    with pytest.raises(ValueError, match="only 400 of 400"):
        ntrex.select(["en", "zh"], n=401)


def test_unknown_requested_language_lists_available(ntrex):
    with pytest.raises(ValueError, match=r"\['de'\] not in the corpus; available: \['en', 'zh'"):
        ntrex.select(["en", "de"])
    with pytest.raises(ValueError, match=r"\['chinese'\] not in the corpus.*did you mean 'zh'"):
        ntrex.records_for("chinese")


def test_bad_json_and_missing_key_name_file_and_line(tmp_path):
    path = write(tmp_path / "b.jsonl", '{"id": "s1", "lang": "en", "text": "a"}\n{"id": "s2", "lang": "en",\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:2: not valid JSON"):
        from_jsonl(path)
    path = write(tmp_path / "k.jsonl", '\n{"id": "s1", "language": "en", "text": "a"}\n')
    with pytest.raises(ValueError, match=r"k\.jsonl:2: missing key 'lang' .*pass lang_key="):
        from_jsonl(path)
    assert from_jsonl(path, lang_key="language").languages == ["en"]


def test_tsv_errors_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"w\.tsv:3: 2 tab-separated fields, the header has 3"):
        from_tsv(write(tmp_path / "w.tsv", "id\ten\tfr\ns1\ta\tb\ns2\ta\n"))
    with pytest.raises(ValueError, match=r"h\.tsv:1: header must be"):
        from_tsv(write(tmp_path / "h.tsv", "sid\ttext\ns1\ta\n"))
    with pytest.raises(ValueError, match=r"x\.tsv:1: .*unknown language code 'french'; did you mean 'fr'"):
        from_tsv(write(tmp_path / "x.tsv", "id\ten\tfrench\ns1\ta\tb\n"))


# --- loaders ------------------------------------------------------------------------------------------------------

def test_tsv_long_and_wide_give_the_same_corpus(tmp_path):
    long = from_tsv(write(tmp_path / "long.tsv", "id\tlang\ttext\ns1\ten\tHello\ns1\tzh-CN\t你好\ns2\ten\tBye\n"))
    wide = from_tsv(write(tmp_path / "wide.tsv", "id\ten\tzh-CN\ns1\tHello\t你好\ns2\tBye\t\n"))
    assert list(long) == list(wide) == [Record("s1", "en", "Hello"), Record("s1", "zh-CN", "你好"),
                                        Record("s2", "en", "Bye")]
    assert long.name == "long" and wide.select(["en", "zh-CN"]).ids == ["s1"]


def test_jsonl_reads_long_format_and_keeps_order(tmp_path):
    path = write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": 7, "lang": "fr", "text": "sept", "extra": 1}, {"id": 7, "lang": "en", "text": "seven"},
        {"id": 8, "lang": "en", "text": "eight\u2028eight"}]) + "\n")
    corpus = from_jsonl(path)
    assert corpus.ids == ["7", "8"] and corpus.languages == ["fr", "en"]
    assert corpus.text("8", "en") == "eight\u2028eight"


def test_bible_xml_fixture():
    corpus = from_bible_xml(BIBLE)
    assert corpus.name == "bible" and corpus.languages == ["en", "fr", "zh"]
    assert corpus.ids == ["b.GEN.1.1", "b.GEN.1.2", "b.GEN.1.3", "b.MAT.1.1", "b.MAT.1.2"]
    assert corpus.meta["skipped_empty"] == {"en": 0, "fr": 0, "zh": 1}
    assert corpus.text("b.GEN.1.2", "en") == ("And the earth was without form, and void; and darkness was upon the "
                                              "face of the deep. And the Spirit of God moved upon the face of the "
                                              "waters.")
    assert corpus.select(["en", "fr", "zh"]).ids == ["b.GEN.1.1", "b.GEN.1.2", "b.MAT.1.1"]
    with pytest.raises(ValueError, match="b.GEN.1.3 has no 'fr'"):
        corpus.text("b.GEN.1.3", "fr")
    assert from_bible_xml(BIBLE, books=["MAT"]).ids == ["b.MAT.1.1", "b.MAT.1.2"]
    with pytest.raises(ValueError, match=r"no book\(s\) \['REV'\]; books in the file: GEN, MAT"):
        from_bible_xml(BIBLE, books=["REV"])


def test_bible_xml_errors(tmp_path):
    bad = write(tmp_path / "bad.xml", "<cesDoc>\n<seg id='b.GEN.1.1'>x</cesDoc>\n")
    with pytest.raises(ValueError, match=r"bad\.xml:2: not well-formed XML"):
        from_bible_xml({"en": bad})
    with pytest.raises(ValueError, match="unknown language code 'english'; did you mean 'en'"):
        from_bible_xml({"english": BIBLE["en"]})


def test_hf_dataset_with_translation_column():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"id": ["0", "1"], "translation": [{"en": "Hello", "fr": "Bonjour"},
                                                                       {"en": "Bye", "fr": "Au revoir"}]})
    corpus = from_hf_dataset(ds, id_column="id")
    assert corpus.ids == ["0", "1"] and corpus.languages == ["en", "fr"] and corpus.text("1", "fr") == "Au revoir"
    assert from_hf_dataset(ds, langs=["fr"]).ids == ["row-0", "row-1"]
    assert from_hf_dataset(datasets.DatasetDict({"train": ds})).text("row-0", "en") == "Hello"
    with pytest.raises(ValueError, match=r"\['de'\] not in the dataset; available: \['en', 'fr'\]"):
        from_hf_dataset(ds, langs=["de"])


def test_hf_dataset_with_text_columns_and_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sid": ["a", "b"], "english": ["one", "two"], "vietnamese": ["một", "hai"]})
    corpus = from_hf_dataset(ds, id_column="sid", text_columns={"en": "english", "vi": "vietnamese"})
    assert corpus.text("a", "vi") == "một"
    with pytest.raises(ValueError, match="no 'translation' column; pass text_columns="):
        from_hf_dataset(ds)
    with pytest.raises(ValueError, match="no column 'french'"):
        from_hf_dataset(ds, text_columns={"fr": "french"})
    ds2 = datasets.Dataset.from_dict({"english": ["one", "two"], "vietnamese": ["một", " "]})
    with pytest.raises(ValueError, match=r"dataset row 1 \('row-1', 'vi'\)"):
        from_hf_dataset(ds2, text_columns={"en": "english", "vi": "vietnamese"})
    path = write(tmp_path / "t.jsonl", '{"translation": {"en": "Hi", "id": "Halo"}}\n')
    local = from_hf_dataset(path, cache_dir=str(tmp_path / "hf-cache"))
    assert list(local) == [Record("row-0", "en", "Hi"), Record("row-0", "id", "Halo")]


def test_load_corpus_dispatch(tmp_path, ntrex):
    assert load_corpus("ntrex128").fingerprint() == ntrex.fingerprint()
    assert load_corpus("ntrex128-passages").name == "ntrex128-passages"
    assert load_corpus(write(tmp_path / "c.tsv", "id\ten\ns1\ta\n")).ids == ["s1"]
    assert load_corpus(str(write(tmp_path / "c.jsonl", '{"id": 1, "lang": "en", "text": "a"}'))).ids == ["1"]
    assert load_corpus(BIBLE).languages == ["en", "fr", "zh"]
    folder = load_corpus(FIXTURES, files={"en": "bible_en.xml", "zh": "bible_zh.xml"}, books=["GEN"])
    assert folder.ids == ["b.GEN.1.1", "b.GEN.1.2", "b.GEN.1.3"]
    with pytest.raises(ValueError, match=r"is a folder: pass files=.*found: bible_en\.xml"):
        load_corpus(FIXTURES)
    with pytest.raises(ValueError, match="no such file or folder: .*nope.jsonl; accepted: 'ntrex128'"):
        load_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"don't know how to read 'c\.txt'"):
        load_corpus(write(tmp_path / "c.txt", "x"))
