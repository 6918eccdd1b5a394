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
