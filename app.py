"""The tour guide in a browser: photo, speech and text in; a grounded answer, its sources and speech out.

UI only: every model call goes through guide.pipeline.stream_turn. `python app.py` (or `make run`) serves it
on http://127.0.0.1:7860; `python app.py --kiosk` is the full-screen touch layout for a machine in a museum;
the same file runs unchanged as a Hugging Face Space (docs/SPACE.md).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import html
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder

from guide.config import load_config
from guide.dialogue import DialogueState
from guide.errors import GuideError
from guide.lang import language_name
from guide.pipeline import Guide, Turn, stream_turn

try:  # Hugging Face Spaces: on ZeroGPU hardware a GPU is attached for the length of a turn; elsewhere a no-op
    import spaces
except ImportError:
    spaces = None

log = logging.getLogger("guide.app")

CHROMIUM = "/usr/bin/chromium"  # Debian's package; the kiosk opens it when a display exists
SORRY = "Sorry, something went wrong on my side. Please try again."
TURN_SECONDS = 120  # ZeroGPU: the longest a GPU is held for one turn

# Example questions per tour and language; a tour without an entry shows none.
# Kiosk: high contrast (white on black, yellow accents and focus rings) and large touch targets.
KIOSK_CSS = """
:root, .dark, .gradio-container {
  --body-background-fill: #000 !important; --background-fill-primary: #000 !important;
  --background-fill-secondary: #111 !important; --block-background-fill: #000 !important;
  --input-background-fill: #111 !important; --body-text-color: #fff !important;
  --body-text-color-subdued: #eee !important; --block-label-text-color: #fff !important;
  --block-title-text-color: #fff !important; --block-info-text-color: #eee !important;
  --border-color-primary: #fff !important; --block-border-color: #fff !important;
  --input-border-color: #fff !important; --color-accent: #ffd400 !important;
  --button-primary-background-fill: #ffd400 !important; --button-primary-text-color: #000 !important;
  --button-primary-background-fill-hover: #ffe866 !important;
  --button-secondary-background-fill: #fff !important; --button-secondary-text-color: #000 !important;
  --link-text-color: #ffd400 !important; --chatbot-text-size: 1.4rem !important;
  --color-accent-soft: #1a1a1a !important; --border-color-accent-subdued: #ffd400 !important;
  --code-background-fill: #222 !important; --table-even-background-fill: #111 !important;
  --table-odd-background-fill: #000 !important; --input-placeholder-color: #bbb !important;
}
#chat [data-testid=user], #chat [data-testid=bot] {color: #fff !important; border-color: #fff !important;}
#chat [data-testid=user] {background: #1a1a1a !important; border-color: #ffd400 !important;}
code {color: #fff !important; background: #222 !important;}
.gradio-container {max-width: 100% !important; font-size: 1.35rem !important; background: #000 !important;
  color: #fff !important;}
button {min-height: 3.5rem !important; font-size: 1.35rem !important;}
textarea, input, select {font-size: 1.35rem !important;}
*:focus-visible {outline: 4px solid #ffd400 !important; outline-offset: 2px;}
#notice .notice {background: #ffd400; color: #000;}
footer {display: none !important;}
"""

CSS = """
#notice .notice {border-left: 6px solid #b45309; background: #fef3c7; color: #1f2937; padding: .6rem .9rem;
  border-radius: 6px; font-size: 1.05rem;}
"""


@functools.lru_cache(maxsize=1)
def get_guide() -> Guide:
    """The models and indexes, loaded once for every visitor (stale indexes are rebuilt first)."""
    return Guide.load(load_config())


def _turns(state: DialogueState, inputs: dict):
    """The model work of one turn: yields (Turn, DialogueState) as the answer streams.

    The state comes back with every Turn because on a ZeroGPU Space this runs in another process,
    where changes to the caller's object would be lost.
    """
    for turn in stream_turn(get_guide(), state, **inputs):
        yield turn, state


if spaces is not None:
    _turns = spaces.GPU(duration=TURN_SECONDS)(_turns)


class Outputs(NamedTuple):
    """What `respond` yields, in the order of the event's outputs."""

    chat: Any
    sources: Any
    card: Any
    card_photo: Any
    speech: Any  # the whole spoken answer, to replay, once the turn is done
    live: Any  # the spoken answer streamed sentence by sentence while it is written (a streaming Audio)
    state: Any
    text: Any
    notice: Any
    image: Any
    audio: Any
    last_active: Any


def photo_input(**kwargs) -> gr.Image:
    """A gr.Image (type="filepath") whose upload reaches the guide as its file path, unopened.

    gr.Image opens every upload with PIL before the event runs, so a zero-byte file, a text file named
    .jpg or a decompression bomb ends as Gradio's bare "Error"; guide.vision.load_image reads the file
    itself (size limits first) and answers with a message the visitor can act on. (An instance
    override, not a subclass: Gradio writes a .pyi stub beside the module of every component class.)"""
    image = gr.Image(type="filepath", **kwargs)
    default = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return default(payload)

    image.preprocess = preprocess
    return image


def _notice_html(text: str | None) -> str:
    if not text:
        return ""
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    return f'<div class="notice" role="status" aria-live="polite">{body}</div>'


def _shown(text: str) -> str:
    """Text for a Markdown component (chat, sources, card) that shows as it was written: HTML in a
    visitor's question, a tour text or an answer is displayed, never rendered as elements."""
    return html.escape(text or "", quote=False)


def _sources_md(turn: Turn) -> str:
    if not turn.passages:
        return ""
    lines = []
    for i, h in enumerate(turn.passages, 1):
        p = h.passage
        mark = "**" if i in turn.citations else ""
        text = p.text if len(p.text) < 400 else p.text[:400] + "…"
        source = str(p.source).replace("`", "'")  # a code span shows its text as it is
        lines.append(f"{mark}[{i}] {_shown(p.title)}{mark} · _{language_name(p.lang)}, {p.kind}_  \n"
                     f"{_shown(text)}  \n`{source}`")
    return "\n\n".join(lines)


def _card(guide: Guide, turn: Turn, tour_id: str):
    """Markdown for the recognised / current attraction, and its reference photo (an Image update)."""
    rec = turn.recognition
    tour = guide.tour(tour_id)
    lines, photo, name = [], None, None
    if rec is not None:
        rec_id = getattr(rec, "attraction", None)
        why = getattr(rec, "why", "") or ""
        if rec_id:
            try:
                shown = tour.attraction(rec_id).name(turn.language)
            except KeyError:
                shown = getattr(rec, "name", None) or rec_id
            lines.append(f"### 📷 {_shown(shown)} ({getattr(rec, 'score', 0.0):.0%})\n{_shown(why)}")
        else:
            lines.append(f"### 📷 I don't recognise this place\n{_shown(why)}")
    if turn.attraction:
        a = tour.attraction(turn.attraction)
        name = a.name(turn.language)
        if rec is None or getattr(rec, "attraction", None) != a.id:
            lines.append(f"### {_shown(name)}")
        related = [(kind, other) for kind, ids in a.relations.items() for other in ids]
        if related:
            lines.append("**Nearby and related:** " + ", ".join(
                f"{_shown(tour.attraction(o).name(turn.language))} ({kind.replace('_', ' ')})"
                for kind, o in related[:6]))
        folder = tour.photos_dir(a.id)
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")) \
            if folder.is_dir() else []
        photo = str(photos[0]) if photos else None
    alt = f"Reference photo of {name}" if photo and name else None
    return "\n\n".join(lines), gr.Image(value=photo, alt_text=alt, visible=photo is not None)


def _speech_audio(turn: Turn | list, rate: int | None = None):
    """Spoken sentences (a Turn's, or a list of tts.Speech) as one (sample_rate, int16 samples) clip, a
    short pause after each; at `rate` (default: the first sentence's)."""
    speech = [*turn.preface_speech, *turn.speech] if isinstance(turn, Turn) else list(turn)
    if not speech:
        return None
    rate = int(rate or speech[0].sample_rate)
    gap = np.zeros(int(0.25 * rate), dtype=np.float32)
    parts = []
    for s in speech:
        x = np.asarray(s.samples, dtype=np.float32).reshape(-1)
        if int(s.sample_rate) != rate and len(x):  # a sentence in another voice: resample linearly
            n = int(round(len(x) * rate / s.sample_rate))
            x = np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
        parts += [x, gap]
    return rate, (np.clip(np.concatenate(parts), -1.0, 1.0) * 32767).astype(np.int16)


class _LiveSpeech:
    """The chunks for the streaming player: each Turn's sentences not sent yet, as one clip (or gr.skip()).

    When the answer changed after part of it was heard (turn.speech_replaced), the final answer's
    speech is sent from its start, after what was already played."""

    def __init__(self):
        self.sent, self.restarted, self.rate, self.prefaced = 0, False, None, False

    def chunk(self, turn: Turn):
        if turn.speech_replaced and not self.restarted:
            self.sent, self.restarted = 0, True
        new = turn.speech[self.sent:]
        if turn.preface_speech and not self.prefaced:  # the subject's name, said first
            self.prefaced = True
            new = list(turn.preface_speech) + new
        if not new:
            return gr.skip()
        self.sent = len(turn.speech)
        clip = _speech_audio(new, self.rate)
        self.rate = clip[0]
        return clip


def _forget_upload(path) -> None:
    """Delete a visitor's upload (photo, recording) from Gradio's upload folder; other paths are left alone."""
    if not path or not isinstance(path, str | os.PathLike):
        return
    try:
        p, root = Path(path).resolve(), Path(get_upload_folder()).resolve()
        if root not in p.parents or not p.is_file():
            return
        p.unlink()
        if p.parent != root and not any(p.parent.iterdir()):
            p.parent.rmdir()  # Gradio keeps each upload in a folder of its own
    except OSError:
        log.warning("could not delete an upload", exc_info=True)


def respond(text, image, audio, tour_id, language, speak, chat, state):
    """One visitor turn: yields Outputs as the answer streams; with `speak`, each sentence's speech goes
    to the streaming player as soon as it is made, and the whole answer to the replay player at the end.

    Visitor mistakes come back as a friendly notice, a GuideError as its message, anything else is
    logged and answered with an apology: one visitor's failure never reaches another. The photo and
    recording are deleted from disk when the turn ends, whatever happened.
    """
    state = state if isinstance(state, DialogueState) else DialogueState()
    state.language_override = None if language in (None, "", "auto") else language
    shown = text.strip() if text and text.strip() else ("🎤 …" if audio is not None else "")
    if image is not None:
        shown = f"📷 {shown}".strip()
    chat = [*(chat or []), {"role": "user", "content": _shown(shown) or "…"}, {"role": "assistant", "content": ""}]
    try:
        # the composer empties as in any chat; sources, card, speech and notice of the last turn go
        yield Outputs(chat, "", "", gr.Image(value=None, visible=False), None, gr.skip(), state, "", "", None, None,
                      time.monotonic())
        inputs = dict(text=text, audio=audio, image=image, tour=tour_id, speak=bool(speak))
        live = _LiveSpeech()
        for turn, new_state in _turns(state, inputs):
            state = new_state
            if turn.question and not (text and text.strip()):  # what was heard, or "What is this?" for a photo
                mic = "🎤 " if turn.transcript is not None else ""
                chat[-2]["content"] = _shown(f"{'📷 ' if image is not None else ''}{mic}{turn.question}")
            chat[-1]["content"] = _shown(turn.answer)
            if turn.done:
                card, photo = _card(get_guide(), turn, tour_id)
                speech = _speech_audio(turn)
                log.info("turn done: %s", ", ".join(f"{k} {v:.2f}s" for k, v in turn.timings.items()))
            else:
                card = photo = speech = gr.skip()
            yield Outputs(chat, _sources_md(turn), card, photo, speech, live.chunk(turn), state, gr.skip(),
                          _notice_html(turn.notice), gr.skip(), gr.skip(), time.monotonic())
    except GuideError as e:  # for the visitor or the operator to act on: shown as it is
        chat[-1:] = [{"role": "assistant", "content": _shown(str(e))}]
        yield Outputs(chat, "", "", gr.skip(), None, gr.skip(), state, text, _notice_html(str(e)), None, None,
                      time.monotonic())
    except Exception:
        log.exception("turn failed")
        chat[-1:] = [{"role": "assistant", "content": SORRY}]
        yield Outputs(chat, "", "", gr.skip(), None, gr.skip(), state, text, _notice_html(SORRY), None, None,
                      time.monotonic())
    finally:
        _forget_upload(image)
        _forget_upload(audio)


def reset(image=None, audio=None):
    """A new conversation: everything cleared, the visitor's uploads deleted (same outputs as respond)."""
    _forget_upload(image)
    _forget_upload(audio)
    return Outputs([], "", "", gr.Image(value=None, visible=False), None, None, DialogueState(), "", "", None, None,
                   0.0)


def is_idle(last_active: float, idle_s: float, now: float | None = None) -> bool:
    """Whether a kiosk conversation is idle: there was activity (last_active > 0, time.monotonic() seconds)
    and none for idle_s seconds."""
    now = time.monotonic() if now is None else now
    return last_active > 0 and now - last_active >= idle_s


def idle_tick(image, audio, last_active, *, idle_s: float, now: float | None = None):
    """Kiosk timer: reset the conversation once it has been idle for idle_s seconds, else change nothing."""
    if is_idle(last_active, idle_s, now):
        log.info("kiosk: idle for %.0f s, new conversation", idle_s)
        return reset(image, audio)
    return Outputs(*(gr.skip() for _ in Outputs._fields))


def _examples(tour_id: str | None) -> list[list[str]]:
    """[language, question] rows of the tour's `examples` (tour.yaml), for "Try asking"."""
    tours = get_guide().tours
    examples = tours[tour_id].examples if tour_id in tours else {}
    return [[language_name(lang, native=True), q] for lang, qs in examples.items() for q in qs]


def _language_choices(guide: Guide, tour_id: str | None) -> list[tuple[str, str]]:
    langs = guide.tour(tour_id).languages if tour_id in guide.tours else []
    return [("Automatic", "auto")] + [(language_name(c, native=True), c) for c in langs]


def build_ui(*, kiosk: bool = False, idle_reset_s: float = 120) -> gr.Blocks:
    """The Blocks app. Kiosk: larger controls, and a new conversation after idle_reset_s seconds without activity."""
    guide = get_guide()
    default_tour = guide.config.default_tour if guide.config.default_tour in guide.tours else next(iter(guide.tours))
    # kiosk: besides deleting uploads after each turn, Gradio sweeps its cache every minute (answers' audio too)
    sweep = (60, max(1, int(idle_reset_s))) if kiosk else None
    with gr.Blocks(title="Tour guide", fill_width=kiosk, delete_cache=sweep) as demo:
        state = gr.State(DialogueState())
        last_active = gr.State(0.0)  # time.monotonic() of the visitor's last action; 0 = nothing to clear
        gr.Markdown("# Your tour guide\nAsk by typing, speaking or showing a photo — in your own language.")
        with gr.Row():
            tour = gr.Dropdown([(t.title("en"), t.id) for t in guide.tours.values()], value=default_tour,
                               label="Tour", scale=2)
            language = gr.Dropdown(_language_choices(guide, default_tour), value="auto", label="Answer language",
                                   scale=1)
            speak = gr.Checkbox(value=True, label="Speak the answer", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", height=620 if kiosk else 460, elem_id="chat",
                                  placeholder="Ask me about the places on this tour.")
                notice = gr.HTML(elem_id="notice", js_on_load=None)
                with gr.Row(equal_height=True):
                    text = gr.Textbox(label="Your question", placeholder="e.g. When was the Eiffel Tower built?",
                                      scale=5, lines=1, max_lines=4, elem_id="question")
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask", size="lg")
                with gr.Row():
                    image = photo_input(sources=["upload", "webcam"], image_mode=None,
                                     label="Show me a photo", height=220 if kiosk else 200, elem_id="photo")
                    audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                     label="Ask aloud (record or upload)", elem_id="recording")
                # the browser's own players, keyboard- and screen-reader-friendly: the answer plays sentence by
                # sentence while it is written (streamed); the whole answer stays to replay
                live = gr.Audio(label="Spoken answer", streaming=True, autoplay=True, interactive=False,
                                elem_id="speech-live", buttons=[] if kiosk else None)  # a kiosk offers no downloads
                speech = gr.Audio(label="Replay the answer", autoplay=False, interactive=False, elem_id="speech",
                                  waveform_options=gr.WaveformOptions(show_recording_waveform=False),
                                  buttons=[] if kiosk else None)
                clear = gr.Button("New conversation", elem_id="new-conversation")
                examples = gr.Dataset(components=["textbox", "textbox"], headers=["Language", "Question"],
                                      samples=_examples(default_tour), label="Try asking", layout="table",
                                      samples_per_page=12, visible=bool(_examples(default_tour)), elem_id="examples")
            with gr.Column(scale=2):
                gr.Markdown("## Attraction")
                card = gr.Markdown(elem_id="card")
                card_photo = gr.Image(label="Reference photo", interactive=False, height=220, elem_id="card-photo",
                                      visible=False)
                gr.Markdown("## Sources")
                sources = gr.Markdown(elem_id="sources")

        inputs = [text, image, audio, tour, language, speak, chat, state]
        outputs = [chat, sources, card, card_photo, speech, live, state, text, notice, image, audio, last_active]
        turn = dict(fn=respond, inputs=inputs, outputs=outputs, concurrency_id="turn",
                    concurrency_limit=1 if kiosk else 2, show_progress="minimal")
        gr.on([send.click, text.submit], **turn)
        examples.click(lambda sample: sample[1], examples, text, queue=False, show_progress="hidden") \
            .then(**turn)
        clear.click(reset, [image, audio], outputs, queue=False)
        chat.clear(reset, [image, audio], outputs, queue=False)  # the chat's own 🗑 forgets the conversation too

        def tour_changed(tour_id, image_path, audio_path):
            samples = _examples(tour_id)
            return (*reset(image_path, audio_path), gr.Dropdown(choices=_language_choices(guide, tour_id),
                                                                value="auto"),
                    gr.Dataset(samples=samples, visible=bool(samples)))

        tour.input(tour_changed, [tour, image, audio], [*outputs, language, examples], queue=False)
        if kiosk:
            gr.on([text.input, image.input, image.upload, audio.input, audio.start_recording],
                  lambda: time.monotonic(), None, last_active, queue=False, show_progress="hidden")
            timer = gr.Timer(max(1.0, min(15.0, idle_reset_s / 4)))
            timer.tick(functools.partial(idle_tick, idle_s=idle_reset_s), [image, audio, last_active], outputs,
                       queue=False, show_progress="hidden")
    return demo


def server_name(*, kiosk: bool, host: str) -> str:
    """127.0.0.1 for a kiosk (never reachable from the network), 0.0.0.0 on a Space, else `host`."""
    if kiosk:
        return "127.0.0.1"
    if os.environ.get("SPACE_ID"):
        return "0.0.0.0"
    return host


def private_temp_dir() -> Path:
    """Point Gradio's upload cache at a private folder (mode 0700), removed when the app exits."""
    path = Path(tempfile.mkdtemp(prefix="tourguide-kiosk-"))
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def open_kiosk_browser(url: str, profile_dir: Path) -> subprocess.Popen | None:
    """Debian's Chromium in kiosk mode on `url` when it is installed and a display exists; else log the URL."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or not os.access(CHROMIUM, os.X_OK):
        log.info("kiosk: open %s full-screen in a browser (no display or no %s here)", url, CHROMIUM)
        return None
    args = [CHROMIUM, "--kiosk", url, "--incognito", "--no-first-run", "--noerrdialogs", "--disable-translate",
            "--disable-session-crashed-bubble", "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",  # grant this page the microphone and camera without a prompt
            f"--user-data-dir={profile_dir}"]
    log.info("kiosk: opening %s in %s", url, CHROMIUM)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the tour guide app.")
    parser.add_argument("--kiosk", action="store_true",
                        help="full-screen touch layout on 127.0.0.1; nothing visitors say or show stays on disk")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--idle-reset", type=float, default=120,
                        help="kiosk: seconds without activity before a new conversation (default 120; "
                             "longer than a turn takes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    temp = private_temp_dir() if args.kiosk else None  # before any component exists: Gradio reads it then
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a clean shutdown (and cleanup) on SIGTERM too
    get_guide().warm()  # models and stale indexes before the first visitor; speech self-checked in the background
    demo = build_ui(kiosk=args.kiosk, idle_reset_s=args.idle_reset)
    demo.queue(default_concurrency_limit=1, max_size=4 if args.kiosk else 32)
    if args.kiosk:
        theme = gr.themes.Base(text_size=gr.themes.sizes.text_lg, spacing_size=gr.themes.sizes.spacing_lg,
                               radius_size=gr.themes.sizes.radius_lg)
        _, url, _ = demo.launch(server_name=server_name(kiosk=True, host=args.host), server_port=args.port,
                                css=CSS + KIOSK_CSS, theme=theme, footer_links=[], prevent_thread_lock=True)
        browser = open_kiosk_browser(url, temp / "chromium")
        try:
            demo.block_thread()
        finally:
            if browser is not None and browser.poll() is None:
                browser.terminate()
                browser.wait(10)
    else:
        demo.launch(server_name=server_name(kiosk=False, host=args.host), server_port=args.port, css=CSS,
                    theme=gr.themes.Soft())


if __name__ == "__main__":
    main()
