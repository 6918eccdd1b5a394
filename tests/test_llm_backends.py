"""The real offline LLM, in-process (llama.cpp) and behind an OpenAI-compatible server on loopback."""

import socket
import subprocess
import sys
import time

import httpx
import pytest

from guide.answer import OpenAICompatibleLLM, load_llm
from guide.config import load_config
from guide.dialogue import DialogueState
from guide.pipeline import Guide, answer_turn

from .conftest import HERE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf_path():
    from guide.models import assemble_pack

    return assemble_pack("qwen2.5-0.5b", load_config().cache_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(gguf_path, tmp_path_factory):
    """llama_cpp.server serving the offline model on 127.0.0.1, started and stopped by the test."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")  # a pipe would fill up and stall it
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--model_alias", "guide"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama_cpp.server exited: {log.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _guide(tmp_path, llm):
    config = load_config("offline", tours_dir=HERE / "data", index_dir=tmp_path / "idx")
    return Guide.load(config, llm=llm, progress=False)


def test_openai_compatible_server_answers_in_german_with_the_fact(server, tmp_path):
    llm = OpenAICompatibleLLM(server, model="guide")
    pieces = list(llm.stream([{"role": "user", "content": "Say the word: hello"}], max_tokens=8))
    assert len(pieces) >= 1  # streamed over server-sent events
    turn = answer_turn(_guide(tmp_path, llm), DialogueState(), text="Wie hoch ist der Eiffelturm?", tour="minitour")
    assert not turn.refused and "330" in turn.answer and turn.language == "de"


def test_server_and_in_process_give_the_same_greedy_answer(server, gguf_path, tmp_path):
    messages = [{"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "The Pont Neuf was completed in 1607. When was the Pont Neuf completed?"}]
    remote = "".join(OpenAICompatibleLLM(server, model="guide").stream(messages, max_tokens=24))
    local = "".join(load_llm("qwen2.5-0.5b", cache_dir=load_config().cache_dir).stream(messages, max_tokens=24))
    assert "1607" in local and "1607" in remote


def test_unreachable_server_is_a_clear_error():
    from guide.errors import GuideError

    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(GuideError, match="cannot be reached"):
        list(llm.stream([{"role": "user", "content": "hi"}], max_tokens=4))
