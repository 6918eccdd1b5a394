from pathlib import Path

import pytest

from guide.dialogue import DialogueState, find_attractions, resolve
from guide.lang import detect_language, fold
from guide.tours import load_tour

from .conftest import MINITOUR


@pytest.fixture(scope="module")
def tour():
    return load_tour(MINITOUR)


def test_fold():
    assert fold("Sacré-Cœur!") == "sacre coeur"
    assert fold("ご視聴ありがとう") == "ご視聴ありがとう"  # kana keep their voicing marks


def test_names_in_any_language_and_inflection(tour):
    assert find_attractions("Wie hoch ist der Eiffelturm?", tour) == ["eiffel-tower"]
    assert find_attractions("Die Spitze des Eiffelturms", tour) == ["eiffel-tower"]  # genitive
    assert find_attractions("Quand la tour Eiffel a-t-elle été construite ?", tour) == ["eiffel-tower"]
    assert find_attractions("Is the Pont Neuf older than the Louvre Museum?", tour) == ["pont-neuf", "louvre"]
    assert find_attractions("How tall is it?", tour) == []
    # what speech recognition makes of the names
    assert find_attractions("Eine Frage zum Eiferturm in Paris", tour) == ["eiffel-tower"]
    assert find_attractions("Wann wurde der Eifeltum gebaut?", tour) == ["eiffel-tower"]
    assert find_attractions("Was ist ein Eichhörnchen?", tour) == []


def test_names_of_several_words_misheard():
    """Whisper splits and merges the words of a name ("la Torre y Fel" for "la Torre Eiffel")."""
    paris = load_tour(Path(__file__).parent.parent / "tours" / "paris")
    assert find_attractions("Tengo una pregunta sobre la Torre y Fel de París.", paris) == ["eiffel-tower"]
    assert find_attractions("Quelle est la hauteur de la tour Montparnas ?", paris) == ["tour-montparnasse"]
    assert find_attractions("Tell me about the Arc de Triomf and Notre Dam", paris) == ["arc-de-triomphe", "notre-dame"]
    assert find_attractions("こんにちはノートルダム大制度について質問があります", paris) == ["notre-dame"]
    # Chinese names heard as other characters of the same sound (盧福宫, lú fú gōng, for 卢浮宫)
    assert find_attractions("你好,我想问一下盧福宫的玻璃锦子塔,他是谁设计的。", paris) == ["louvre"]
    assert find_attractions("凯旋们下面埋葬的是谁？", paris) == ["arc-de-triomphe"]
    for other in ("Tell me about the tower of London", "トイレはどこですか", "附近有好吃的餐厅吗？", "请问厕所在哪里？", "Where is the nearest restaurant?",
                  "Quel est le prix du billet pour le musée ?", "What time does the metro close?"):
        assert find_attractions(other, paris) == [], other


@pytest.mark.parametrize(
    "text, lang",
    [
        ("Wann wurde der Eiffelturm gebaut?", "de"),
        ("Quand la tour Eiffel a-t-elle été construite ?", "fr"),
        ("¿Cuándo se construyó la Torre Eiffel?", "es"),
        ("埃菲尔铁塔有多高？", "zh"),
        ("エッフェル塔はいつ建てられましたか？", "ja"),
        ("How tall is it?", "en"),
    ],
)
def test_language_identification(text, lang):
    assert detect_language(text, ["en", "fr", "de", "es", "zh", "ja"])[0] == lang


def test_follow_up_keeps_the_subject(tour):
    state = DialogueState(tour=tour.id)
    first = resolve(state, "How tall is the Eiffel Tower?", tour)
    assert first.attractions == ["eiffel-tower"] and first.language == "en"
    assert state.attraction is None and state.language is None  # resolve decides, the turn applies
    state.apply(first.change(), first.text, "It is 330 m tall.")
    assert state.attraction == "eiffel-tower" and state.language == "en" and len(state.history) == 2
    follow = resolve(state, "And when was it built?", tour)
    assert follow.attractions == ["eiffel-tower"] and follow.mentioned == []
    assert follow.search_text.startswith("Eiffel Tower")
    other = resolve(state, "Is the Louvre open on Tuesdays?", tour)
    assert other.attractions == ["louvre"] and other.change().attraction == "louvre"
    assert state.attraction == "eiffel-tower"


def test_names_do_not_decide_the_language(tour):
    state = DialogueState(tour=tour.id)
    assert resolve(state, "Is the Louvre Museum free on Sundays?", tour).language == "en"
    q = resolve(state, "Ist der Eiffelturm heute geöffnet?", tour)
    assert q.language == "de"
    state.apply(q.change(), q.text, "Ja.")
    # too short to tell: the conversation's language stays
    assert resolve(state, "Louvre?", tour).language == "de"


def test_unsupported_language_answers_in_english_and_says_so(tour):
    state = DialogueState(tour=tour.id)
    q = resolve(state, "Сколько стоит билет на Эйфелеву башню?", tour)
    assert q.detected == "ru" and q.language == "en"
    q = resolve(state, "Quanto costa il biglietto per la torre?", tour)
    assert q.detected == "it" and q.language == "en"


def test_language_override_wins(tour):
    state = DialogueState(tour=tour.id, language_override="de")
    assert resolve(state, "How tall is the Eiffel Tower?", tour).language == "de"


def test_photo_sets_the_subject(tour):
    state = DialogueState(tour=tour.id)
    q = resolve(state, "What is this?", tour, seen="pont-neuf")
    assert q.attractions == ["pont-neuf"] and q.change().attraction == "pont-neuf"
