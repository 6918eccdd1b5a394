import textwrap

import pytest

from guide.errors import TourError
from guide.tours import list_tours, load_tour, tour_passages

from .conftest import MINITOUR, ROOT


def write(tmp_path, body: str, folder: str = "city"):
    d = tmp_path / folder
    d.mkdir()
    (d / "tour.yaml").write_text(textwrap.dedent(body), encoding="utf-8")
    return d


def test_minitour_loads_with_names_and_facts():
    tour = load_tour(MINITOUR)
    assert tour.id == "minitour" and tour.languages == ["en", "de"]
    eiffel = tour.attraction("eiffel-tower")
    assert eiffel.name("de") == "Eiffelturm"
    assert eiffel.name("ja") == "Eiffel Tower"  # falls back to English
    assert eiffel.facts["height"] == "330 m"


def test_passages_cover_every_language_and_localise_fact_labels():
    passages = tour_passages(load_tour(MINITOUR))
    facts_de = next(p for p in passages if p.id == "eiffel-tower/de/facts")
    assert "Höhe: 330 m" in facts_de.text
    assert {p.lang for p in passages if p.attraction == "pont-neuf"} == {"en", "de"}
    assert all(p.source.endswith(("descriptions.en", "descriptions.de", "facts")) for p in passages)


def test_a_fact_written_per_language_is_shown_in_the_visitors_language(tmp_path):
    d = write(tmp_path, """
        id: city
        name: {en: City}
        languages: [en, de, fr]
        attractions:
          - id: tower
            names: {en: [Tower], de: [Turm], fr: [Tour]}
            descriptions: {en: "A tower.", de: "Ein Turm.", fr: "Une tour."}
            facts:
              height: 50 m
              inside: {en: "Yes: a museum.", de: "Ja: ein Museum."}
        """)
    tour = load_tour(d)
    facts = {p.lang: p.text for p in tour_passages(tour) if p.kind == "facts"}
    assert "Ja: ein Museum." in facts["de"] and "Yes" not in facts["de"] and "50 m" in facts["de"]
    assert "Yes: a museum." in facts["fr"]  # no French text: the English one
    assert tour.attraction("tower").fact("inside", "de") == "Ja: ein Museum."


def test_a_per_language_fact_in_a_language_the_tour_lacks_is_reported(tmp_path):
    d = write(tmp_path, """
        id: city
        name: {en: City}
        languages: [en]
        attractions:
          - id: tower
            names: {en: [Tower]}
            descriptions: {en: "A tower."}
            facts: {inside: {en: "Yes.", xx: "Oui.", de: ""}}
        """)
    with pytest.raises(TourError) as e:
        load_tour(d)
    text = "\n".join(e.value.problems)
    assert "attractions[0].facts.inside.xx: language 'xx' is not in the tour's languages" in text
    assert "attractions[0].facts.inside: a fact written per language needs a text for each language" in text


def test_every_problem_is_reported_with_file_and_field(tmp_path):
    d = write(tmp_path, """
        id: city
        name: {en: City}
        languages: [en, fr]
        attractions:
          - id: tower
            names: {en: [Tower]}
            descriptions: {en: "A tower.", fr: "   "}
            facts: {coordinates: [500, 2]}
            relations: {nearby: [nowhere]}
          - id: tower
            names: {en: [Other]}
            descriptions: {en: "x"}
        """)
    with pytest.raises(TourError) as e:
        load_tour(d)
    problems = e.value.problems
    text = "\n".join(problems)
    assert "city/tour.yaml: attractions[0].descriptions.fr: empty" in text
    assert "attractions[0].facts.coordinates" in text
    assert "attractions[0].relations.nearby[0]: unknown attraction 'nowhere'" in text
    assert "attractions[1].id: duplicate id 'tower'" in text
    assert "attractions[1].descriptions.fr: missing" in text
    assert len(problems) == 5


def test_broken_yaml_and_missing_file_are_clear(tmp_path):
    d = write(tmp_path, "id: city\nattractions: [\n")
    with pytest.raises(TourError, match=r"invalid YAML \(line \d+"):
        load_tour(d)
    with pytest.raises(TourError, match="no such tour file"):
        load_tour(tmp_path / "nowhere")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tour.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(TourError, match="not UTF-8"):
        load_tour(tmp_path / "bin")


GOOD = """
id: city
name: {en: City}
languages: [en]
attractions:
  - {id: a, names: {en: [A]}, descriptions: {en: "Text."}, facts: {height: 5 m}}
"""


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import time

    levels = 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    levels += "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9))  # 9^9 values
    d = write(tmp_path, levels + GOOD.replace("facts: {height: 5 m}", "facts: {height: *l8}"))
    t = time.perf_counter()
    with pytest.raises(TourError, match="expands to more than"):
        load_tour(d)
    assert time.perf_counter() - t < 10


def test_a_self_referencing_alias_and_absurd_nesting_are_refused(tmp_path):
    d = write(tmp_path, GOOD.replace("facts: {height: 5 m}", "facts: &f {height: 5 m, again: *f}"))
    with pytest.raises(TourError, match="refers to itself"):
        load_tour(d)
    deep = write(tmp_path, GOOD.replace("5 m", "[" * 100 + "]" * 100), folder="deep")
    with pytest.raises(TourError, match="nested more than"):
        load_tour(deep)


def test_an_unreadable_or_oversized_tour_file_is_a_tour_error(tmp_path, monkeypatch):
    import pathlib

    import guide.tours as tours

    d = write(tmp_path, GOOD)
    real = pathlib.Path.read_bytes

    def denied(self):
        if self.name == "tour.yaml":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(TourError, match="cannot be read \\(Permission denied\\)"):
        load_tour(d)
    monkeypatch.undo()
    assert load_tour(d).attraction("a").fact("height") == "5 m"  # readable again: it loads
    monkeypatch.setattr(tours, "MAX_TOUR_BYTES", 10)
    with pytest.raises(TourError, match="a tour file may hold 10"):
        load_tour(d)


def test_facts_without_names_and_languages_listed_twice_are_reported(tmp_path):
    d = write(tmp_path, GOOD.replace("languages: [en]", "languages: [en, en]").replace(
        "facts: {height: 5 m}", "facts: {height: 5 m, 1889: built}"))
    with pytest.raises(TourError) as e:
        load_tour(d)
    assert "languages[1]: 'en' is listed twice" in str(e.value)
    assert "attractions[0].facts.1889: a fact needs a name" in str(e.value)


def test_id_must_match_folder(tmp_path):
    d = write(tmp_path, """
        id: other
        name: {en: City}
        languages: [en]
        attractions:
          - {id: a, names: {en: [A]}, descriptions: {en: "Text."}}
        """)
    with pytest.raises(TourError, match="differs from the folder name"):
        load_tour(d)


def test_project_tours_are_valid_and_multilingual():
    tours = list_tours(ROOT / "tours")
    assert "paris" in tours and len(tours) >= 2
    paris = load_tour(ROOT / "tours" / "paris")
    assert len(paris.attractions) >= 15
    assert len(paris.languages) >= 5 and "en" in paris.languages
    for a in paris.attractions:
        assert set(paris.languages) <= set(a.descriptions)
        assert a.facts.get("coordinates"), a.id


@pytest.mark.parametrize("answer, lang", [
    ("Pierre Lescot [1].", None),  # a name from the facts reads the same in every language
    ("Libéral Bruant [3].", None),
    ("Jean-François Chalgrin [1].", None),
    ("Paul Abadie (design, won the 1874 competition).", "en"),  # English words around the name
    ("Le Louvre est un musée public depuis 1793 [2].", "fr"),
    ("Der Bogen wurde von Jean-François Chalgrin entworfen [1].", "de"),
])
def test_answer_language_ignores_the_names_in_the_facts(answer, lang):
    from guide.evaluate import answer_language, fact_names

    paris = load_tour(ROOT / "tours" / "paris")
    assert {"Pierre Lescot", "Louis Le Vau", "I. M. Pei", "Charles Garnier"} <= set(fact_names(paris))
    assert answer_language(answer, paris) == lang


def test_the_inside_questions_of_the_eval_set_are_answered_by_the_descriptions():
    from guide.evaluate import contains_fact, load_eval_set

    paris = load_tour(ROOT / "tours" / "paris")
    inside = [q for q in load_eval_set(paris.folder / "eval.yaml") if q.id.endswith("-inside")]
    assert len(inside) == 12 and {q.lang for q in inside} == set(paris.languages)
    for q in inside:  # what the visitor should hear is in the text the guide retrieves, in their language
        assert contains_fact(paris.attraction(q.attractions[0]).descriptions[q.lang], q.expect), q.id
