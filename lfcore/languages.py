"""Language codes: the ISO 639-1 table and ``check_language("zh-CN")``, which accepts a code with an optional
script/region suffix and, for a bad one, suggests the code meant ("chinese" -> "zh").
"""
from __future__ import annotations

import difflib
import re

# ISO 639-1: code and English name ("|"-separated), used to validate codes and to suggest one for a name.
_ISO639_1_TABLE = (
    "aa Afar|ab Abkhazian|ae Avestan|af Afrikaans|ak Akan|am Amharic|an Aragonese|ar Arabic|as Assamese|av Avaric|"
    "ay Aymara|az Azerbaijani|ba Bashkir|be Belarusian|bg Bulgarian|bi Bislama|bm Bambara|bn Bengali|bo Tibetan|"
    "br Breton|bs Bosnian|ca Catalan|ce Chechen|ch Chamorro|co Corsican|cr Cree|cs Czech|cu Church Slavic|cv Chuvash|"
    "cy Welsh|da Danish|de German|dv Divehi|dz Dzongkha|ee Ewe|el Greek|en English|eo Esperanto|es Spanish|"
    "et Estonian|eu Basque|fa Persian|ff Fulah|fi Finnish|fj Fijian|fo Faroese|fr French|fy Western Frisian|ga Irish|"
    "gd Scottish Gaelic|gl Galician|gn Guarani|gu Gujarati|gv Manx|ha Hausa|he Hebrew|hi Hindi|ho Hiri Motu|"
    "hr Croatian|ht Haitian Creole|hu Hungarian|hy Armenian|hz Herero|ia Interlingua|id Indonesian|ie Interlingue|"
    "ig Igbo|ii Sichuan Yi|ik Inupiaq|io Ido|is Icelandic|it Italian|iu Inuktitut|ja Japanese|jv Javanese|"
    "ka Georgian|kg Kongo|ki Kikuyu|kj Kuanyama|kk Kazakh|kl Kalaallisut|km Khmer|kn Kannada|ko Korean|kr Kanuri|"
    "ks Kashmiri|ku Kurdish|kv Komi|kw Cornish|ky Kyrgyz|la Latin|lb Luxembourgish|lg Ganda|li Limburgish|ln Lingala|"
    "lo Lao|lt Lithuanian|lu Luba-Katanga|lv Latvian|mg Malagasy|mh Marshallese|mi Maori|mk Macedonian|ml Malayalam|"
    "mn Mongolian|mr Marathi|ms Malay|mt Maltese|my Burmese|na Nauru|nb Norwegian Bokmal|nd North Ndebele|ne Nepali|"
    "ng Ndonga|nl Dutch|nn Norwegian Nynorsk|no Norwegian|nr South Ndebele|nv Navajo|ny Chichewa|oc Occitan|"
    "oj Ojibwa|om Oromo|or Odia|os Ossetian|pa Punjabi|pi Pali|pl Polish|ps Pashto|pt Portuguese|qu Quechua|"
    "rm Romansh|rn Rundi|ro Romanian|ru Russian|rw Kinyarwanda|sa Sanskrit|sc Sardinian|sd Sindhi|se Northern Sami|"
    "sg Sango|si Sinhala|sk Slovak|sl Slovenian|sm Samoan|sn Shona|so Somali|sq Albanian|sr Serbian|ss Swati|"
    "st Southern Sotho|su Sundanese|sv Swedish|sw Swahili|ta Tamil|te Telugu|tg Tajik|th Thai|ti Tigrinya|tk Turkmen|"
    "tl Tagalog|tn Tswana|to Tongan|tr Turkish|ts Tsonga|tt Tatar|tw Twi|ty Tahitian|ug Uyghur|uk Ukrainian|ur Urdu|"
    "uz Uzbek|ve Venda|vi Vietnamese|vo Volapuk|wa Walloon|wo Wolof|xh Xhosa|yi Yiddish|yo Yoruba|za Zhuang|"
    "zh Chinese|zu Zulu"
)
ISO639_1: dict[str, str] = dict(item.split(" ", 1) for item in _ISO639_1_TABLE.split("|"))
# Three-letter codes of the paper's languages (ISO 639-2/3, NTREX file names) -> the two-letter code.
_THREE_LETTER = {"eng": "en", "zho": "zh", "chi": "zh", "cmn": "zh", "fra": "fr", "fre": "fr", "spa": "es",
                 "por": "pt", "ara": "ar", "arb": "ar", "vie": "vi", "hin": "hi", "ind": "id"}
# "zh", "zh-CN", "pt-BR", "zh-Hans", "zh-Hant-TW", "es-419"
_LANG_RE = re.compile(r"^([a-z]{2})(-[A-Z][a-z]{3})?(-(?:[A-Z]{2}|[0-9]{3}))?$")


def suggest(code: str) -> list[str]:
    """Codes close to a bad code or a language name ("chinese" -> ["zh"], "EN" -> ["en"], "zh_CN" -> ["zh-CN"])."""
    low = code.strip().lower()
    fixed = re.sub(r"[_ ]", "-", code.strip())
    parts = fixed.split("-")
    fixed = "-".join([parts[0].lower()] + [p.title() if len(p) == 4 else p.upper() for p in parts[1:]])
    if _LANG_RE.match(fixed) and parts[0].lower() in ISO639_1:
        return [fixed]
    if low in _THREE_LETTER:
        return [_THREE_LETTER[low]]
    by_name = {name.lower(): c for c, name in ISO639_1.items()}
    hits = [c for name, c in by_name.items() if len(low) >= 3 and name.startswith(low)]
    hits += [by_name[n] for n in difflib.get_close_matches(low, list(by_name), n=3, cutoff=0.75)]
    if not hits and len(low) == 2:
        hits = difflib.get_close_matches(low, list(ISO639_1), n=3)
    return list(dict.fromkeys(hits))


def check_language(code: str) -> str:
    """Return `code` if it is an ISO 639-1 code with an optional script/region suffix, else raise ValueError."""
    m = _LANG_RE.match(code) if isinstance(code, str) else None
    if m and m.group(1) in ISO639_1:
        return code
    hint = " or ".join(repr(s) for s in suggest(str(code)))
    raise ValueError(f"unknown language code {code!r}" + (f"; did you mean {hint}?" if hint else "")
                     + " (use ISO 639-1 codes such as 'en', 'zh', optionally suffixed: 'zh-CN', 'pt-BR', 'zh-Hans')")
