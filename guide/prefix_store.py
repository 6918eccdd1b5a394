"""The KV store of fixed prompt starts: llama.cpp's state after the system prompt (and worked example)
of each language, put back before a prompt that starts with it. Used by the llm_server child.
"""

from __future__ import annotations

import logging

__all__ = ["PrefixStore", "fixed_messages"]

log = logging.getLogger(__name__)


def fixed_messages(messages: list[dict]) -> int:
    """How many leading messages are the part of a prompt that recurs from visitor to visitor: the system
    prompt and, when it follows, the worked example (a user / assistant pair), as answer.build_messages
    puts them first. 0 when the prompt has nothing before its question."""
    if len(messages) < 2 or messages[0].get("role") != "system":
        return 0
    if len(messages) > 3 and messages[1].get("role") == "user" and messages[2].get("role") == "assistant":
        return 3
    return 1


class PrefixStore:
    """llama.cpp's KV state of each fixed prompt start seen (system prompt + example, one per language).

    llama-cpp-python reuses the KV cache only for the prefix shared with the previous prompt, so a
    visitor in another language than the one before pays for the whole fixed part again (124-178
    tokens, about a second on two cores). The store keeps each fixed part's KV cells (a few MB) and
    puts them back before a prompt that starts with one; the rest of the prompt is evaluated as usual.
    Chat-template boundaries are found by the template's message-start token (<|im_start|>, ChatML);
    a model without one is served as before.
    """

    def __init__(self, llm, capacity: int = 16):
        from collections import OrderedDict

        self.llm, self.capacity = llm, capacity
        self.states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.hits = self.misses = 0
        try:
            start = llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
        except Exception:  # noqa: BLE001 - a tokenizer without it: no store
            start = []
        self.start_token = start[0] if len(start) == 1 else None
        self.n_fixed = 0  # set per request: fixed_messages() of its messages

    def install(self) -> None:
        """Put the store in front of the model's own generate() (which create_chat_completion calls)."""
        original = self.llm.generate

        def generate(tokens, *args, **kwargs):
            try:
                self.before(list(tokens))
            except Exception:  # noqa: BLE001 - never cost an answer: llama.cpp then evaluates it all
                log.warning("prefix store skipped", exc_info=True)
                self.states.clear()
            yield from original(tokens, *args, **kwargs)

        self.llm.generate = generate

    def boundary(self, tokens: list[int]) -> int:
        """Token index where the fixed messages end (the start of message n_fixed + 1), or 0."""
        if not self.n_fixed or self.start_token is None:
            return 0
        starts = [i for i, t in enumerate(tokens) if t == self.start_token]
        return starts[self.n_fixed] if len(starts) > self.n_fixed else 0

    def before(self, tokens: list[int]) -> None:
        import llama_cpp

        llm = self.llm
        b = self.boundary(tokens)
        if b < 16:
            return
        key = tuple(tokens[:b])
        cached = llama_cpp.Llama.longest_token_prefix(llm._input_ids.tolist(), tokens)
        ctx = llm._ctx.ctx
        if cached >= b and key in self.states:
            self.states.move_to_end(key)
            return
        if key in self.states:  # put the stored cells back: the prompt's rest is evaluated after them
            data = self.states[key]
            self.states.move_to_end(key)
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            buf = (llama_cpp.ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            if llama_cpp.llama_state_seq_set_data(ctx, buf, len(data), 0) == 0:
                raise RuntimeError("llama_state_seq_set_data failed")
            llm.input_ids[:b] = key
            llm.n_tokens = b
            llm._requires_eval = True
            self.hits += 1
            return
        # not stored yet: evaluate the fixed part on its own first, keep its cells, then go on
        self.misses += 1
        if cached < b:
            llm._ctx.kv_cache_seq_rm(-1, cached, -1)
            llm.n_tokens = cached
            llm.eval(tokens[cached:b])
        else:
            llm._ctx.kv_cache_seq_rm(-1, b, -1)
            llm.n_tokens = b
        llm._requires_eval = True
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (llama_cpp.ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        self.states[key] = bytes(buf[:n])
        while len(self.states) > self.capacity:
            self.states.popitem(last=False)
