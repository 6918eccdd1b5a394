"""One question, prepared for the LLM: resolved in the dialogue, retrieved, turned into a prompt.

Everything here reads the conversation and returns decisions; nothing writes it. `Prepared.change`
is what answering the question changes (its subject, the visitor's language), and the turn applies
it once, with the exchange itself (`DialogueState.apply`), when the answer has been given. The serving
path and the fine-tuning data both use `prepare_prompt`, so a model is trained on exactly the prompts
it will see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from .answer import Prompt
from .dialogue import DialogueState, Query, TurnChange, resolve, strip_names
from .lang import phrase
from .retrieval import Hit
from .tours import Tour

__all__ = ["Prepared", "Searcher", "prepare_prompt", "retrieve", "SUBJECT_CHANGE_MARGIN"]

SUBJECT_CHANGE_MARGIN = 0.02  # cosine: how much better another attraction must match to change the subject


class Searcher:
    """Searches one tour's index, embedding each distinct text once (a turn searches the same
    question up to three times: the open search, the subject's own, the one it answers from)."""

    def __init__(self, guide, tour: Tour):
        self.guide, self.tour, self.index = guide, tour, guide.indexes[tour.id]
        self._vectors: dict[str, object] = {}
        self.embedded = 0  # texts embedded (the tests count them)

    def vector(self, text: str):
        if text not in self._vectors:
            self._vectors[text] = self.guide.embedder.embed_queries([text])[0]
            self.embedded += 1
        return self._vectors[text]

    def __call__(self, text: str, *, k: int | None = None, attractions: list[str] | None = None,
                 lang: str | None = None) -> list[Hit]:
        # Within one attraction its names say nothing (every passage of it holds them), and BM25 then
        # favours the short passages that repeat the name (a coordinates card for "ノートルダム大聖堂は
        # いつ再開しましたか？"): BM25 ranks by the rest of the question, the dense search by all of it.
        # Evidence@4 on the Paris eval questions 0.957 -> 0.978, the training questions 0.957 -> 0.993.
        lexical = strip_names(text, self.tour, attractions) if attractions and len(attractions) == 1 else None
        return self.index.search(text, self.vector(text), k=k or self.guide.config.top_k, attractions=attractions,
                                 lang=lang, lexical_query=lexical)



def retrieve(search: Searcher, query: Query) -> tuple[list[Hit], str | None]:
    """(passages for a query, the attraction it moved the subject to or None).

    About the query's attraction(s) when it has some, else from the whole tour. A subject carried
    over from earlier turns is kept when the message points back to it ("it"); otherwise it gives
    way when the question fits another attraction clearly better.
    """
    k = search.guide.config.top_k
    if not query.attractions:
        return search(query.search_text, k=k, lang=query.language), None
    if len(query.attractions) == 1:
        if query.carried and not query.pointer:
            open_hits = search(query.text, k=k, lang=query.language)
            best = max(open_hits, key=lambda h: h.dense, default=None)
            if best and best.passage.attraction != query.attractions[0]:
                own = search(query.text, k=1, attractions=query.attractions, lang=query.language)
                # ... and shares a word with the other attraction's texts: across languages (a Spanish
                # follow-up, English texts) dense similarities are low and noisy, and moved the subject
                # of 3 of 8 follow-ups on the unseen-city check to one unrelated attraction
                other = best.passage.attraction
                if (not own or best.dense > own[0].dense + SUBJECT_CHANGE_MARGIN) and \
                        search.index.lexical_support(query.text, other) > 0:
                    return sorted(open_hits, key=lambda h: h.passage.attraction != other), other
        return search(query.search_text, k=k, attractions=query.attractions, lang=query.language), None
    per = max(2, k // len(query.attractions))  # comparisons: the best passages of each attraction
    hits: list[Hit] = []
    for aid in query.attractions[:3]:
        hits += search(query.search_text, k=per, attractions=[aid], lang=query.language)
    return hits, None


@dataclass
class Prepared:
    """What the LLM is given for one question, and what answering it changes in the conversation."""

    query: Query
    hits: list[Hit]
    attraction: str | None  # the subject of the answer
    subject: str  # display name(s) of the subject, or "this tour"
    prompt: Prompt  # the question, sources, subject and history as data; rendered by the backend
    change: TurnChange  # applied by the turn once it is answered (DialogueState.apply)

    @property
    def messages(self) -> list[dict]:
        return self.prompt.messages()

    @property
    def evidence(self) -> list[str]:  # texts the grounding checks may rely on
        return self.prompt.texts


def prepare_prompt(guide, state: DialogueState, question: str, tour_obj: Tour, *, seen: str | None = None,
                   heard: str | None = None, example: bool | None = None,
                   timings: dict[str, float] | None = None) -> Prepared:
    """Resolve the question in the dialogue, retrieve, and build the LLM's messages. Reads `state`
    only; `timings` gets the seconds of "retrieval" and "prompt"."""
    t = time.perf_counter()
    query = resolve(state, question, tour_obj, seen=seen, heard=heard)
    search = Searcher(guide, tour_obj)
    hits, moved = retrieve(search, query)
    if moved:
        query = replace(query, attractions=[moved])  # the subject changed
    found = hits[0].passage.attraction if not query.attractions and hits else None  # "Where is the Mona Lisa?"
    attraction = query.attractions[0] if query.attractions else (found or state.attraction)
    subject = (" / ".join(tour_obj.attraction(a).name(query.language) for a in query.attractions)
               if query.attractions else phrase("this_tour", query.language))
    if timings is not None:
        timings["retrieval"] = time.perf_counter() - t
        t = time.perf_counter()
    llm = guide.llm
    if example is None:
        example = getattr(llm, "prompt_example", True)
    budget = guide.config.llm_context - guide.config.max_answer_tokens - 64
    # what the tour says about the attractions in question, in every language, plus what was retrieved
    evidence = [h.passage.text for h in hits]
    evidence += [p.text for p in search.index.passages if p.attraction in query.attractions]
    names = [n for a in tour_obj.attractions for n in a.all_names()]
    prompt = Prompt(question=question, lang=query.language, hits=hits, tour_title=tour_obj.title(query.language),
                    subject=subject, carried=query.carried, history=state.history[-guide.config.history_turns:],
                    budget=budget, count=llm.count_tokens, example=example, evidence=evidence, names=names,
                    spoken=heard is not None)
    prompt.messages()  # rendered once here, so the time counts as the prompt's
    if timings is not None:
        timings["prompt"] = time.perf_counter() - t
    return Prepared(query=query, hits=hits, attraction=attraction, subject=subject, prompt=prompt,
                    change=query.change(moved or found))
