"""The staff page's words: French typography (a narrow no-break space before : ; ? !), labels
built the same way in both languages, and no colon glued on by the page's own code."""

from __future__ import annotations

import re

from rfidd.web import page
from rfidd.web.i18n import WORDS, Formatter

NNBSP = "\u202f"
HIGH = ";:?!"


def test_french_words_put_a_narrow_no_break_space_before_high_punctuation() -> None:
    bad = []
    for key, w in WORDS.items():
        fr = w["fr"]
        for i, c in enumerate(fr):
            if c in HIGH and (i == 0 or fr[i - 1] != NNBSP):
                bad.append((key, fr))
        if NNBSP in w["en"]:
            bad.append((key, w["en"]))
    assert not bad, bad


def test_a_label_and_its_value() -> None:
    assert Formatter("fr", "Europe/Paris").label("missing", "2") == f"Manquants{NNBSP}: 2"
    assert Formatter("en", "Europe/Paris").label("missing", "2") == "Missing: 2"
    assert Formatter("fr", "Europe/Paris").t("refused", reason="x") == f"Refusé{NNBSP}: x"


def test_the_page_does_not_glue_punctuation_onto_words() -> None:
    """A colon after a word in the page's code would be wrong in French ("Où: ..."): labels
    come from the `sep` word (`lab()` in app.js, `data-wl` in index.html)."""
    js = (page.STATIC / "app.js").read_text(encoding="utf-8")
    html = (page.STATIC / "index.html").read_text(encoding="utf-8")
    assert not re.findall(r"S\.words\.\w+\}\s*[:;?!]", js)
    assert not re.findall(r'data-w="\w+"></span>\s*[:;?!]', html)
    assert "lab(" in js and "data-wl=" in html


def test_every_lifecycle_state_and_history_step_is_in_words() -> None:
    """The Find tab shows an item's state and its history's steps: words, never codes."""
    from inventory.lifecycle import BIZ_STEP, Status
    from rfidd.web.i18n import TERMS, Formatter

    codes = {s.value for s in Status} | set(BIZ_STEP.values()) | {"entering_exiting",
                                                                  "cycle_counting"}
    for lang in ("en", "fr"):
        f = Formatter(lang, "Europe/Paris")
        for code in codes:
            assert code in TERMS, code
            assert "_" not in f.term(code), (lang, code)
    assert Formatter("fr", "Europe/Paris").term("in_stock") == "en stock (réserve)"
    assert Formatter("en", "UTC").term("some_new_code") == "some new code"
    assert Formatter("en", "UTC").term(None) == ""
