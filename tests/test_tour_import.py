"""One-language tours (texts in one language, answers in several) and `python -m guide import`."""

import json

import pytest

from guide.cli import main
from guide.errors import TourError
from guide.tour_import import read_places, slug, write_tour
from guide.tours import load_tour, tour_passages

from .test_tours import write

ONE_LANGUAGE = """
    id: city
    name: {en: City}
    languages: [en, de, ja]
    text_languages: [en]
    attractions:
      - id: tower
        names: {en: [Old Tower], de: [Alter Turm]}
        descriptions: {en: "The Old Tower was finished in 1350. It is 40 metres tall."}
        facts: {built: "1350", height: 40 m, inside: "Yes: a small museum on two floors."}
      - id: bridge
        names: {en: [Stone Bridge]}
        descriptions: {en: "The Stone Bridge crosses the river with nine arches."}
    """


def test_a_tour_may_be_written_in_one_language_and_answer_in_several(tmp_path):
    tour = load_tour(write(tmp_path, ONE_LANGUAGE))
    assert tour.languages == ["en", "de", "ja"] and tour.texts_in() == ["en"]
    passages = tour_passages(tour)
    assert {p.lang for p in passages if p.kind == "description"} == {"en"}
    facts = {(p.lang, p.id.rsplit("/", 1)[1]): p.text for p in passages if p.kind == "facts"}
    # the facts in every answer language, labels translated, the same facts on the same card everywhere
    assert {lang for lang, _ in facts} == {"en", "de", "ja"}
    assert "Erbaut: 1350" in "\n".join(v for (lang, _), v in facts.items() if lang == "de")
    for (_, card), text in facts.items():
        assert ("1350" in text) == ("1350" in facts[("en", card)])
    # names as the tour writes them: German where it has one, else English
    assert tour.attraction("tower").name("de") == "Alter Turm" and tour.attraction("bridge").name("de") == "Stone Bridge"


def test_a_one_language_tour_still_needs_its_texts(tmp_path):
    with pytest.raises(TourError) as e:
        load_tour(write(tmp_path, ONE_LANGUAGE.replace('descriptions: {en: "The Stone', 'descriptions: {de: "Die Stein')))
    assert "attractions[1].descriptions.en: missing (the texts are written in en)" in str(e.value)
    with pytest.raises(TourError) as e:
        load_tour(write(tmp_path, ONE_LANGUAGE.replace("text_languages: [en]", "text_languages: [en, fr]"), "other"))
    assert "text_languages[1]: 'fr' is not one of the tour's languages" in str(e.value)


def test_validate_explains_who_is_answered_from_which_texts(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, ONE_LANGUAGE))]) == 0
    out = capsys.readouterr().out
    assert "city: ok, 2 attractions in en, de, ja" in out
    assert "texts written in en; visitors in de, ja are answered in their language from those texts" in out


def test_slugs_are_ids():
    assert slug("Museum of the Moving Image (New York City)") == "museum-of-the-moving-image"
    assert slug("Sailors' Snug Harbor") == "sailors-snug-harbor"
    assert slug("Père Lachaise") == "pere-lachaise"


def places_jsonl(tmp_path):
    path = tmp_path / "places.jsonl"
    rows = [{"title": "Old Tower", "text": "The Old Tower was finished in 1350 [ 2 ] .\nIt is 40 metres tall.",
             "lat": 50.1, "lon": 8.6},
            {"name": "Stone Bridge", "text": "The bridge has nine arches."},
            {"title": "Old Tower", "text": "A duplicate of the first."},
            {"title": "No text"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_import_turns_place_texts_into_a_tour_that_loads(tmp_path, capsys):
    src = places_jsonl(tmp_path)
    assert main(["import", str(src), "--id", "mytown", "--languages", "de,fr", "--out", str(tmp_path / "tours")]) == 0
    tour = load_tour(tmp_path / "tours" / "mytown")
    assert tour.languages == ["en", "de", "fr"] and tour.texts_in() == ["en"]
    assert [a.id for a in tour.attractions] == ["old-tower", "stone-bridge"]  # the duplicate and the empty one: out
    tower = tour.attraction("old-tower")
    assert tower.descriptions["en"] == "The Old Tower was finished in 1350.\n\nIt is 40 metres tall."
    assert tower.facts["coordinates"] == [50.1, 8.6] and tower.name("fr") == "Old Tower"
    assert "2 attractions, texts in en, answers in en, de, fr" in capsys.readouterr().out
    # a curator's edits are never overwritten silently
    assert main(["import", str(src), "--id", "mytown", "--out", str(tmp_path / "tours")]) != 0
    assert "exists (--force to replace it)" in capsys.readouterr().err


def test_import_takes_a_folder_of_texts_and_a_list_of_places(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "tower.md").write_text("# Old Tower\nFinished in 1350.\n\nForty metres tall.", encoding="utf-8")
    (folder / "stone_bridge.txt").write_text("Nine arches.", encoding="utf-8")
    assert [p["name"] for p in read_places(folder)] == ["Stone Bridge", "Old Tower"]
    assert [p["name"] for p in read_places(folder, only=["Old Tower"])] == ["Old Tower"]
    with pytest.raises(TourError, match="no place named 'Castle'"):
        read_places(folder, only=["Castle"])
    path = write_tour(read_places(folder), tmp_path / "t" / "two", tour_id="two", name="Two", text_language="en",
                      languages=["en", "ja"], max_chars=20)
    assert load_tour(path).attraction("old-tower").descriptions["en"] == "Finished in 1350."  # whole paragraphs


@pytest.mark.slow
@pytest.mark.parametrize("question, lang, words", [
    ("Wann wurde der Alte Turm gebaut?", "de", ["1350"]),
    ("Quand la tour a-t-elle été achevée ?", "fr", ["1350"]),
    ("古い塔はいつ完成しましたか？", "ja", ["1350"]),
])
def test_a_visitor_is_answered_in_their_language_from_english_texts(one_language_guide, question, lang, words):
    from guide.dialogue import DialogueState
    from guide.evaluate import answer_language
    from guide.pipeline import answer_turn

    turn = answer_turn(one_language_guide, DialogueState(), text=question, tour="city")
    assert turn.language == lang and not turn.refused, turn.answer
    assert all(w in turn.answer for w in words) and turn.citations, turn.answer
    assert answer_language(turn.answer, one_language_guide.tour("city")) in (lang, None), turn.answer
    assert {h.passage.lang for h in turn.passages if h.passage.kind == "description"} == {"en"}


@pytest.fixture(scope="module")
def one_language_guide(tmp_path_factory):
    """The real offline models over a tour written in English that answers in en, de, fr and ja."""
    from guide.config import load_config
    from guide.pipeline import Guide

    root = tmp_path_factory.mktemp("one-language")
    write(root, ONE_LANGUAGE.replace("languages: [en, de, ja]", "languages: [en, de, fr, ja]"))
    config = load_config("offline", tours_dir=root, index_dir=root / "indexes", adapter="none")
    try:
        guide = Guide.load(config, tours=["city"], progress=False)
    except Exception as e:  # noqa: BLE001 - the offline packs are not installed here
        pytest.skip(f"the offline models are not available: {e}")
    yield guide
    guide.close()
