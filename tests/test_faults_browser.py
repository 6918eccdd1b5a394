"""Faults through the real server: app.py (tiny profile) in a subprocess on 127.0.0.1.

What a visitor's browser sends passes Gradio's own preprocessing before the guide sees it, so the
bad photos and recordings of test_faults.py are sent again here with gradio_client, as uploads.
HTML and script in a question and in a tour text are checked in Debian's headless Chromium
(`browser` marker): no script may run and no element may be injected into the chat or the sources.
Those two are also `slow` (Chromium's start and the page took ~11 s), like tests/test_browser.py:
`make test-slow` and `make test-browser` run them.
"""

import os
import re
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_faults import BAD_PHOTOS, BAD_RECORDINGS, HOSTILE_HTML, QUESTION, make_tours

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOAD_S = 300
ANSWER_MS = 60_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """app.py with the tiny profile over the temporary tours (the hostile one by default)."""
    tmp = tmp_path_factory.mktemp("server")
    tours = make_tours(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUIDE_", "GRADIO_"))}
    env.update(GUIDE_PROFILE="tiny", GUIDE_TOURS_DIR=str(tours), GUIDE_DEFAULT_TOUR="hostile",
               GUIDE_INDEX_DIR=str(tmp / "indexes"), GRADIO_TEMP_DIR=str(tmp / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.pop("SPACE_ID", None)
    port = _free_port()
    log_path = tmp / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + LOAD_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer on {url} within {LOAD_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield types.SimpleNamespace(url=url, log=log_path, uploads=tmp / "gradio", tours=tours, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list):
        return " ".join(text_of(c) for c in content)
    return ""


def client_turn(server, text="", image=None, audio=None, tour="minitour"):
    """One turn through the HTTP API as a new visitor; (guide's reply, notice text)."""
    import html

    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, download_files=False)
    returns = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/respond"]["returns"]
    kinds = [str(r.get("component", "")).lower() for r in returns]  # by type: the app may add outputs
    out = client.predict(text, handle_file(str(image)) if image else None, handle_file(str(audio)) if audio else None,
                         tour, "auto", False, [], api_name="/respond")
    chat, notice = out[kinds.index("chatbot")], out[kinds.index("html")]
    return text_of(chat[-1]["content"]), html.unescape(re.sub(r"<[^>]+>", " ", notice or "")).strip()


# app.photo_input hands the upload to the guide unopened (gr.Image would open it with PIL first and
# answer a zero-byte file, a text file named .jpg or a bomb with Gradio's bare "Error").
PHOTO_CASES = list(BAD_PHOTOS)


@pytest.mark.parametrize("case", PHOTO_CASES)
def test_a_bad_photo_upload_gets_the_guides_message(server, case, tmp_path):
    name, make, phrase = BAD_PHOTOS[case]
    path = tmp_path / name
    path.write_bytes(make())
    reply, notice = client_turn(server, image=path)
    assert phrase in notice and phrase in reply
    reply, notice = client_turn(server, QUESTION)
    assert "330" in reply and notice == ""


@pytest.mark.parametrize("case", [c for c in BAD_RECORDINGS if c != "10-minute-webm-no-duration"])
def test_a_bad_recording_upload_gets_the_guides_message(server, case, tmp_path):
    name, make, phrase = BAD_RECORDINGS[case]
    path = tmp_path / name
    path.write_bytes(make())
    reply, notice = client_turn(server, audio=path)
    assert phrase in notice and phrase in reply
    reply, notice = client_turn(server, QUESTION)
    assert "330" in reply and notice == ""


def test_the_server_survived_every_fault(server):
    """Alive, and no turn failed inside the guide (the app logs 'turn failed' for anything unexpected).

    """
    assert server.proc.poll() is None
    log = server.log.read_text(errors="replace")
    assert "turn failed" not in log
    assert not re.search(r'File "[^"]*/(guide/[^"]+|app\.py)", line', log)  # no traceback through the guide's code
    reply, notice = client_turn(server, QUESTION)
    assert "330" in reply


# ---------------------------------------------------------------------------------------------
# HTML and script in Chromium


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need `pip install playwright`")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def hostile_page(server, browser):
    """A visitor on the hostile tour who typed HTML and script around a normal question, after the answer."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server.url)
    page.locator("#question textarea").wait_for(timeout=60_000)
    page.locator("#question textarea").fill(f"{HOSTILE_HTML.replace('__xss=', '__xss_q=')} {QUESTION}")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator("#chat [data-testid=bot]").last).to_contain_text("330", timeout=ANSWER_MS)
    expect(page.locator("#sources")).to_contain_text("330", timeout=30_000)
    page.wait_for_timeout(1000)  # let anything that would run, run
    page.dialogs = dialogs
    yield page
    context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_no_script_from_a_question_or_a_tour_text_runs(hostile_page):
    ran = hostile_page.evaluate("() => [window.__xss, window.__xss_q]")
    assert ran == [None, None] and not hostile_page.dialogs
    assert hostile_page.locator("#chat script, #sources script, #card script").count() == 0
    assert hostile_page.locator("#chat [onerror], #sources [onerror], a[href^='javascript:']").count() == 0


@pytest.mark.browser
@pytest.mark.slow
def test_html_in_a_question_or_a_tour_text_is_shown_as_text(hostile_page):
    assert hostile_page.locator("#chat img[src='x'], #sources img[src='x'], #injected, #chat b, #sources b").count() == 0
    assert "<b id=\"injected\">bold</b>" in hostile_page.locator("#sources").inner_text()
    assert "<img src=x" in hostile_page.locator("#chat [data-testid=user]").last.inner_text()


def test_no_tour_file_was_written_by_the_server(server):
    import hashlib

    from .test_faults import hostile_tour_yaml

    assert (server.tours / "hostile" / "tour.yaml").read_text(encoding="utf-8") == hostile_tour_yaml()
    for tour in ("paris", "rome"):
        for p in (ROOT / "tours" / tour).rglob("*"):
            if p.is_file() and "photos" not in p.parts:
                copy = server.tours / tour / p.relative_to(ROOT / "tours" / tour)
                assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(p.read_bytes()).digest()


# ---------------------------------------------------------------------------------------------
# scripts/load.py's check of concurrent visitors (make load): it must see another visitor's answer


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_script", ROOT / "scripts" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_load_script_flags_another_visitors_subject_and_chat():
    from guide.tours import load_tour

    load = _load_script()
    tour = load_tour(ROOT / "tours" / "paris")
    names = load.Names(tour)
    plan = load.make_plans(tour, 2, None, {})[1]  # visitor 1 talks about the Sacré-Cœur
    assert plan.attraction == "sacre-coeur" and plan.photo is None and not plan.recordings
    shared = {0: "eiffel-tower", 1: "sacre-coeur"}
    visitor = load.Visitor(1, plan, "http://127.0.0.1:1/", names, shared, 10, False, "/respond",
                           {"chat": 0, "sources": 1, "card": 2, "notice": 3})

    def out(user, card, *titles):
        chat = [{"role": "user", "content": [{"type": "text", "text": user}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Some answer [1]."}]}]
        sources = "\n\n".join(f"**[{i}] {t}** · _English, facts_  \ntext  \n`tours/paris/tour.yaml`"
                              for i, t in enumerate(titles, 1))
        return chat, sources, card, ""

    own = load.Result(1, "text", 1.0)
    question = f"Tell me about the {plan.name}."
    assert visitor.check(own, out(question, "### Sacré-Cœur Basilica", "Sacré-Cœur Basilica", "Sacré-Cœur"),
                         "text", question, None, None, "sacre-coeur") == "sacre-coeur"
    assert own.violation is None and own.error is None
    visitor.chat, visitor.sent = [], []
    leak = load.Result(1, "followup", 1.0)
    visitor.check(leak, out("How tall is it?", "### Eiffel Tower", "Eiffel Tower"), "followup", "How tall is it?",
                  None, "sacre-coeur", None)
    assert leak.violation and leak.cross  # visitor 0's subject in visitor 1's answer
    visitor.sent = ["Tell me about the Louvre."]  # this visitor asked something else than the chat shows
    mixed = load.Result(1, "followup", 1.0)
    visitor.check(mixed, out("How tall is it?", "### Sacré-Cœur Basilica", "Sacré-Cœur Basilica"), "followup",
                  "How tall is it?", None, "sacre-coeur", None)
    assert mixed.violation and "chat holds other messages" in mixed.violation
    rows = load.table([{"visitors": 2, "turns": 3, "by_kind": {"text": 1, "followup": 2}, "errors": 0,
                        "violations": 2, "cross_visitor": 1, "misrecognised": 0, "p50_s": 1.0, "p95_s": 1.0,
                        "max_s": 1.0, "rss_start_mib": 100, "rss_end_mib": 120, "rss_peak_mib": 130}])
    assert "| 2 | 3 | 0 | 2 | 1 | 0 | 1.0 | 1.0 | 1.0 | 100 | 120 | 130 | followup 2, text 1 |" in rows
