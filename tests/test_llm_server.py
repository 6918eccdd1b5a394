"""The answer model's process boundary: the supervisor survives the model's crash (guide.llm_server).

Fast tests run the real child server code (HTTP protocol, supervisor, restart) around a fake
llama.cpp model that writes slowly; the slow ones use the real offline GGUF model.
"""

import os
import signal
import sys
import textwrap
import threading
import time

import pytest

from guide.errors import GuideError
from guide.llm_server import LlamaServer, LLMCrashed, SupervisedLLM

FAKE_CHILD = textwrap.dedent("""
    import json, sys, time
    from http.server import ThreadingHTTPServer
    from guide import llm_server

    class Slow:
        # a stand-in for llama_cpp.Llama: the same chat-completion chunks, one word every 50 ms
        def create_chat_completion(self, messages, stream=False, max_tokens=200, **kw):
            words = ("Answer to " + messages[-1]["content"] + " : one two three four five six seven eight").split()
            if not stream:
                return {"choices": [{"message": {"content": " ".join(words[:max_tokens])}}]}
            def chunks():
                for w in words[:max_tokens]:
                    time.sleep(0.05)
                    yield {"choices": [{"delta": {"content": w + " "}}]}
            return chunks()

    if "--crash-at-start" in sys.argv:
        import os, signal
        os.kill(os.getpid(), signal.SIGSEGV)
    llm_server._exit_with_parent()  # as the real child does
    llm_server._Handler.llm = Slow()
    llm_server._Handler.info = {"name": "fake", "pid": __import__("os").getpid()}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), llm_server._Handler)
    print(json.dumps({"port": httpd.server_address[1], "pid": __import__("os").getpid()}), flush=True)
    httpd.serve_forever()
""")


class FakeServer(LlamaServer):
    def __init__(self, script, *extra, **kw):
        super().__init__("fake.gguf", start_timeout=30, **kw)
        self.script, self.extra = script, list(extra)

    def command(self):
        return [sys.executable, str(self.script), *self.extra]


@pytest.fixture
def fake_llm(tmp_path):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    server = FakeServer(script)
    server.start()
    llm = SupervisedLLM(server, name="fake")
    yield llm
    llm.close()


def ask(llm, text="hello"):
    return "".join(llm.stream([{"role": "user", "content": text}], max_tokens=50))


def test_the_child_answers_over_loopback(fake_llm):
    assert ask(fake_llm, "Eiffel").startswith("Answer to Eiffel")
    assert fake_llm.server.url.startswith("http://127.0.0.1:")


def test_a_child_killed_mid_answer_costs_that_answer_and_the_next_one_is_served(fake_llm):
    first_pid = fake_llm.pid
    pieces = []
    with pytest.raises(LLMCrashed, match="SIGKILL"):
        for piece in fake_llm.stream([{"role": "user", "content": "first"}], max_tokens=50):
            pieces.append(piece)
            if len(pieces) == 2:
                os.kill(first_pid, signal.SIGKILL)  # what a native crash looks like from outside
    assert 2 <= len(pieces) < 12  # it did stop mid-answer
    time.sleep(1.5)  # the restart ran in a thread that has ended since: its child must live on
    assert ask(fake_llm, "second").startswith("Answer to second")
    assert fake_llm.pid != first_pid and fake_llm.server.restarts == 1


def test_concurrent_requests_are_served_one_after_the_other_not_interrupted(fake_llm):
    out = {}

    def visitor(name):
        out[name] = ask(fake_llm, name)

    threads = [threading.Thread(target=visitor, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out["alice"].startswith("Answer to alice") and out["alice"].rstrip().endswith("eight")
    assert out["bob"].startswith("Answer to bob") and out["bob"].rstrip().endswith("eight")


def test_a_child_that_crashes_at_start_is_reported_not_fatal(tmp_path):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    server = FakeServer(script, "--crash-at-start")
    with pytest.raises(GuideError, match="SIGSEGV"):
        server.start()
    assert not server.alive()


def test_a_model_that_keeps_crashing_is_not_restarted_forever(fake_llm):
    fake_llm.restart_limit = 2
    for _ in range(2):
        os.kill(fake_llm.pid, signal.SIGKILL)
        time.sleep(0.2)
        assert ask(fake_llm).startswith("Answer to")
    os.kill(fake_llm.pid, signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(GuideError, match="not restarted again"):
        ask(fake_llm)


def test_no_model_server_outlives_its_supervisor(tmp_path):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    server = FakeServer(script)
    server.start()
    proc = server.proc
    del server
    import gc

    gc.collect()
    assert proc.wait(10) is not None


def test_the_fixed_part_of_a_prompt_is_the_system_prompt_and_its_example():
    from guide.prefix_store import PrefixStore, fixed_messages

    system, ex_q, ex_a = ({"role": r, "content": r} for r in ("system", "user", "assistant"))
    question = {"role": "user", "content": "Sources: ... Question: How tall is it?"}
    assert fixed_messages([system, ex_q, ex_a, question]) == 3
    assert fixed_messages([system, question]) == 1
    assert fixed_messages([question]) == 0 and fixed_messages([system]) == 0

    class Tokens:  # ChatML: token 7 starts each message
        def tokenize(self, text, add_bos=False, special=False):
            return [7]

    store = PrefixStore(Tokens())
    tokens = [7, 1, 1, 7, 2, 2, 7, 3, 7, 4, 4, 4]
    store.n_fixed = 3
    assert store.boundary(tokens) == 8  # the fourth message starts at 8
    store.n_fixed = 1
    assert store.boundary(tokens) == 3
    store.n_fixed = 5
    assert store.boundary(tokens) == 0  # fewer messages than that: nothing is stored
