"""Typed questions through the real offline models: the sources found, and the answer given."""

import pytest

from guide.dialogue import DialogueState
from guide.evaluate import contains_fact
from guide.pipeline import answer_turn
from guide.prepare import Searcher

pytestmark = pytest.mark.slow

REOPENED = "ノートルダム大聖堂はいつ再開しましたか？"  # one of the Paris tour's own example questions


def test_within_one_attraction_its_name_does_not_pick_the_sources(offline_guide):
    # every passage of Notre-Dame holds its name; BM25 on the whole question ranked a coordinates card
    # second and the paragraph that says "2024年12月…に再開しました" last of the attraction's
    tour = offline_guide.tour("paris")
    hits = Searcher(offline_guide, tour)(REOPENED, k=4, attractions=["notre-dame"], lang="ja")
    assert any("2024年12月" in h.passage.text for h in hits[:2]), [h.passage.text[:40] for h in hits]
    assert not any(h.passage.text.startswith("座標") for h in hits)  # the coordinates card


def test_the_japanese_example_question_gets_the_reopening_date(offline_guide):
    turn = answer_turn(offline_guide, DialogueState(), text=REOPENED, tour="paris")
    assert not turn.refused and turn.language == "ja"
    assert contains_fact(turn.answer, ("2024",)), turn.answer
