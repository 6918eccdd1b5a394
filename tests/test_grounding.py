"""The grounding guards on the cases of issue 22: answers that sound like refusals, concept words in
answerable questions, questions of kinds no concept lists, and each guard switched on and off."""

import pytest

from guide.answer import AnswerStream, Prompt
from guide.grounding import (
    GUARDS,
    guard_set,
    is_refusal,
    missing_concepts,
    missing_content,
    refusal_decided,
)
from guide.lang import LANGUAGES, phrase
from guide.retrieval import Hit
from guide.tours import Passage

from .test_answer import Replies, ScriptedLLM


@pytest.mark.parametrize("text", [
    "Unfortunately, the tower is closed on Mondays [1].",
    "Leider ist das Museum montags geschlossen [1].",
    "I'm sorry to say it was demolished in 1871.",
    "Sorry. It was built in 1889 [1].",
    "No, it is closed on Tuesdays [2].",
    "No se puede subir a la cima en silla de ruedas [1].",
    "很抱歉，塔顶不对轮椅使用者开放[1]。",
    "残念ながら、月曜日は休館です[1]。",
    "Its master builder is not known for certain [1].",
])
def test_answers_that_open_like_refusals_are_answers(text):
    assert not is_refusal(text)


@pytest.mark.parametrize("text", [
    "I don't know.", "I'm sorry, I don't know.", "Unfortunately, the sources do not say.", "Sorry.",
    "Leider weiß ich das nicht.", "Das weiß ich nicht.", "Désolé, je ne sais pas.", "No lo sé.",
    "Lo siento, las fuentes no lo mencionan.", "我不知道。", "抱歉，资料中没有提到这一点。", "わかりません。",
    "The sources do not mention the Wi-Fi password [1].", "",
])
def test_refusals_are_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_the_guides_own_refusal_is_a_refusal_in_every_language(lang):
    assert is_refusal(phrase("refusal", lang, subject="Eiffel Tower"))


def test_a_polite_opening_holds_the_decision_until_its_sentence_ends():
    assert not refusal_decided("Unfortunately, the tower")
    assert refusal_decided("Unfortunately, the tower is closed on Mondays [1].")
    assert refusal_decided("Unfortunately, I don't know")  # already a refusal
    assert refusal_decided("The tower is 330 m")  # no polite opening: nothing to wait for


def _hit(text, lang="en", attraction="eiffel-tower", title="Eiffel Tower", kind="description"):
    return Hit(Passage(id=f"{attraction}/{lang}/d0", tour="t", attraction=attraction, lang=lang, kind=kind,
                       title=title, text=text, source="t#x"), 0.1, 0.9, 1)


def test_a_soft_opening_is_not_withdrawn_mid_stream():
    hits = [_hit("The museum is closed on Mondays.")]
    llm = ScriptedLLM("Unfortunately, the museum is closed on Mondays [1].")
    stream = AnswerStream(llm, Prompt("Is the museum open on Mondays?", "en", hits, subject="the museum"))
    pieces = list(stream)
    assert not stream.answer.refused and stream.answer.text == "Unfortunately, the museum is closed on Mondays [1]."
    assert "".join(pieces) == "Unfortunately, the museum is closed on Mondays [1]."  # nothing replaced


def test_a_price_question_needs_an_amount_of_money_not_the_word_price():
    question = "How much did it cost to build the Eiffel Tower?"
    assert missing_concepts(question, ["It cost 7.8 million francs to build."]) == []
    assert missing_concepts(question, ["Built 1887-1889; 330 m tall."]) == ["price"]
    assert missing_concepts("Was kostet der Eintritt?", ["Eintritt frei"]) == []
    assert missing_concepts("Combien coûte l'entrée ?", ["Les prix changent souvent."]) == ["price"]


def test_a_person_in_office_is_asked_for_only_in_the_present():
    texts = ["The tower opened in 1889 for the World's Fair."]
    assert missing_concepts("Who was president of France when it opened?", texts) == []
    assert missing_concepts("Qui est le directeur actuel ?", texts) == ["person in office"]
    assert missing_concepts("Wie heißt der aktuelle Direktor des Louvre?", texts) == ["person in office"]


@pytest.mark.parametrize("question, absent", [
    ("How many cleaners work at the Louvre?", "cleaners"),
    ("What will the weather be like tomorrow at the Eiffel Tower?", "weather"),
    ("What colour is the door of the Eiffel Tower?", "door"),
])
def test_a_content_word_in_no_source_is_found(question, absent):
    texts = ["The Eiffel Tower is 330 m tall and was built by Gustave Eiffel's company in 1889 for the World's Fair."]
    assert absent in missing_content(question, texts, names=["Louvre", "Eiffel Tower"])


def test_content_words_ignore_names_function_words_and_inflections():
    texts = ["The Eiffel Tower is 330 m tall, the tallest structure until 1930; designed by Koechlin."]
    assert missing_content("How tall is the Eiffel Tower?", texts, names=["Eiffel Tower"]) == []
    assert missing_content("Who designed the Tour Eiffel?", texts) == []  # a capitalised name
    assert missing_content("Hello! I come from Lyon. How tall is it?", texts) == []  # the last question only
    # Chinese and Japanese: what is left between function words and names, found by any two characters
    assert missing_content("明天埃菲尔铁塔的天气怎么样？", texts, names=["埃菲尔铁塔"]) == ["明天", "天气"]
    assert missing_content("埃菲尔铁塔的塔顶有多高？", ["埃菲尔铁塔高330米，塔顶276米。"], names=["埃菲尔铁塔"]) == []


def test_the_content_check_only_runs_where_the_tour_has_texts_in_the_questions_language():
    en = [_hit("The Old Tower was finished in 1350.", title="Old Tower")]
    de_question = "Wann wurde der Alte Turm fertiggestellt?"  # German words, English texts: answered across
    stream = AnswerStream(ScriptedLLM("Der Turm wurde 1350 fertiggestellt [1]."), Prompt(de_question, "de", en))
    "".join(stream)
    assert not stream.answer.refused
    # the same in English, about something no text mentions: declined before the model is asked
    llm = Replies("Invented.")
    stream = AnswerStream(llm, Prompt("How many cleaners work in the Old Tower?", "en", en, subject="Old Tower"))
    "".join(stream)
    assert stream.answer.refused and llm.calls == 0


def test_guards_switch_on_and_off_by_name():
    assert guard_set(True) == frozenset(GUARDS) and guard_set(False) == frozenset() == guard_set(None)
    assert guard_set("concepts, numbers") == {"concepts", "numbers"}
    with pytest.raises(ValueError, match="unknown answer guard"):
        guard_set({"nonsense"})
    hits = [_hit("The Old Tower was finished in 1350.", title="Old Tower")]
    question = "How many cleaners work in the Old Tower?"
    for guards, asked in ((True, 0), ({"concepts", "numbers"}, 1), (False, 1)):
        llm = Replies("It has 12 cleaners [1].")
        stream = AnswerStream(llm, Prompt(question, "en", hits, subject="Old Tower"), guards=guards)
        "".join(stream)
        assert llm.calls == asked and stream.answer.refused is (guards is not False)  # 12: invented, withdrawn


def test_an_answer_echoed_twice_falls_back_to_the_sentence_that_fits_the_question():
    """Two echoes: the guide quotes the source sentence that best fits the question, not the one that merely
    names the subject, and does not decline (declining there cost the Paris set 10 answers)."""
    hits = [_hit("Notre-Dame de Paris is a cathedral on the Ile de la Cite.", title="Notre-Dame", attraction="nd"),
            _hit("Notre-Dame: construction began in 1163 and ended in 1345.", title="Notre-Dame", attraction="nd")]
    question = "When did the construction of Notre-Dame begin?"
    llm = Replies(question, question)
    stream = AnswerStream(llm, Prompt(question, "en", hits, subject="Notre-Dame"), guards={"echo"})
    "".join(stream)
    assert not stream.answer.refused and "1163" in stream.answer.text and llm.calls == 2


def test_prompt_renders_what_build_messages_does_and_the_retry_reads_fields():
    from guide.answer import build_messages

    hits = [_hit("The Old Tower was finished in 1350.", title="Old Tower")]
    prompt = Prompt("When was it finished?", "en", hits, tour_title="Town", subject="Old Tower", carried=True)
    assert prompt.messages() == build_messages("When was it finished?", "en", hits, tour_title="Town",
                                               subject="Old Tower")
    assert prompt.asked == "When was it finished? (Old Tower)"
    assert prompt.retry_messages()[-1]["content"].startswith("Question: When was it finished?")
    llm = Replies("When was it finished? [1]", "It was finished in 1350 [1].")
    stream = AnswerStream(llm, prompt)
    "".join(stream)
    assert stream.answer.text == "It was finished in 1350 [1]." and llm.calls == 2
