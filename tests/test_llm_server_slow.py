"""The real offline answer model behind its process boundary (slow: loads the 0.5B GGUF)."""

import os
import signal

import pytest

from guide.config import load_config
from guide.dialogue import DialogueState

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    from guide.pipeline import Guide

    config = load_config("offline", index_dir=tmp_path_factory.mktemp("indexes"), adapter="none")
    g = Guide.load(config, tours=["paris"], progress=False)
    yield g
    g.llm.close()


def test_the_served_model_runs_in_a_child_that_passed_its_self_check(guide):
    from guide.llm_server import SupervisedLLM

    assert isinstance(guide.llm, SupervisedLLM)
    assert guide.llm.pid != os.getpid() and guide.llm.server.alive()
    assert guide.llm.self_check == "ok"
    assert "AVX512 = 1" not in guide.llm.server.info["system_info"]


def test_killing_the_model_during_a_turn_costs_that_answer_and_the_next_visitor_is_answered(guide):
    from guide.lang import phrase
    from guide.pipeline import answer_turn, stream_turn

    pid = guide.llm.pid
    killed = False
    last = None
    for turn in stream_turn(guide, DialogueState(), text="Tell me the whole history of the Eiffel Tower.",
                            tour="paris"):
        if turn.answer and not killed:
            os.kill(pid, signal.SIGKILL)  # what a native crash looks like from outside
            killed = True
        last = turn
    assert killed and last.done
    assert phrase("llm_failed", "en") in (last.answer + (last.notice or ""))
    assert not last.citations

    # the next visitor: the supervisor has restarted the model
    second = answer_turn(guide, DialogueState(), text="When was the Eiffel Tower built?", tour="paris")
    assert phrase("llm_failed", "en") not in second.answer
    assert "1887" in second.answer or "1889" in second.answer, second.answer  # built 1887-1889
    assert guide.llm.pid != pid and guide.llm.server.restarts >= 1


def test_the_prefix_store_gives_the_same_answers_and_keeps_one_fixed_part_per_language(guide):
    """A visitor in another language than the previous one gets that language's system prompt and example
    from the store (not evaluated again), and the answer a server without the store gives. (Not always
    to the letter: llama.cpp's sums differ in the last bits when a prompt is evaluated in two batches,
    as its own prefix reuse does too, and a greedy answer can then end differently.)"""
    import httpx

    from guide.answer import OpenAICompatibleLLM
    from guide.llm_server import LlamaServer
    from guide.pipeline import prepare_prompt

    tour = guide.tour("paris")
    questions = ["How tall is the Eiffel Tower?", "Wann wurde der Louvre ein Museum?", "When was the Eiffel Tower built?"]
    prompts = [prepare_prompt(guide, DialogueState(), q, tour).messages for q in questions]
    answers = {}
    for store in (False, True):
        server = LlamaServer(guide.llm.server.model, name="check", prefix_store=store)
        server.start()
        try:
            client = OpenAICompatibleLLM(server.url, model="check")
            answers[store] = ["".join(client.stream(m, max_tokens=48)) for m in prompts]
            stats = httpx.get(server.url + "/health").json()["prefix_store"]
        finally:
            server.stop()
        if store:  # en, de: stored; en again after de: put back from the store
            assert stats == {"kept": 2, "hits": 1, "misses": 2}
        else:
            assert stats is None
    for answer in answers.values():
        assert "330" in answer[0] and "1793" in answer[1] and ("1887" in answer[2] or "1889" in answer[2]), answer
    assert answers[True][:2] == answers[False][:2]
