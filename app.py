"""The tour guide in a browser: photo, speech and text in; a grounded answer, its sources and speech out.

UI only: every model call goes through guide.pipeline.stream_turn. Run `python app.py` (or `make run`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

import gradio as gr
import numpy as np

from guide.config import load_config
from guide.dialogue import DialogueState
from guide.errors import GuideError
from guide.lang import language_name
from guide.pipeline import Guide, Turn, stream_turn

log = logging.getLogger("guide.app")

EXAMPLES = [
    "When was the Eiffel Tower built?",
    "Wann wurde der Eiffelturm gebaut, und wie hoch ist er?",
    "Quelle est la hauteur de la tour Montparnasse ?",
    "¿Se puede subir a la cúpula del Sacré-Cœur?",
    "卢浮宫的玻璃金字塔是谁设计的？",
    "ノートルダム大聖堂はいつ再開しましたか？",
]

KIOSK_CSS = """
.gradio-container {font-size: 1.35rem !important; background: #000 !important; color: #fff !important;}
button {min-height: 3.2rem !important; font-size: 1.3rem !important;}
textarea, input {font-size: 1.3rem !important;}
"""


@functools.lru_cache(maxsize=1)
def get_guide() -> Guide:
    """The models and indexes, loaded once for every visitor (stale indexes are rebuilt first)."""
    return Guide.load(load_config())


def _sources_md(turn: Turn) -> str:
    if not turn.passages:
        return ""
    lines = []
    for i, h in enumerate(turn.passages, 1):
        p = h.passage
        mark = "**" if i in turn.citations else ""
        text = p.text if len(p.text) < 400 else p.text[:400] + "…"
        lines.append(f"{mark}[{i}] {p.title}{mark} · _{language_name(p.lang)}, {p.kind}_  \n{text}  \n`{p.source}`")
    return "\n\n".join(lines)


def _card(guide: Guide, turn: Turn, tour_id: str):
    """Markdown for the recognised / current attraction, a reference photo, and related places."""
    rec = turn.recognition
    tour = guide.tour(tour_id)
    lines, photo = [], None
    if rec is not None:
        if getattr(rec, "attraction", None):
            lines.append(f"### 📷 {rec.name} ({rec.score:.0%})\n{rec.why}")
        else:
            lines.append(f"### 📷 I don't recognise this place\n{getattr(rec, 'why', '')}")
    if turn.attraction:
        a = tour.attraction(turn.attraction)
        if rec is None:
            lines.append(f"### {a.name(turn.language)}")
        related = [(kind, other) for kind, ids in a.relations.items() for other in ids]
        if related:
            lines.append("**Nearby and related:** " + ", ".join(
                f"{tour.attraction(o).name(turn.language)} ({kind.replace('_', ' ')})" for kind, o in related[:6]))
        photos = sorted(tour.photos_dir(a.id).glob("*.jpg")) if tour.photos_dir(a.id).is_dir() else []
        photo = str(photos[0]) if photos else None
    return "\n\n".join(lines), photo


def _speech_audio(turn: Turn):
    if not turn.speech:
        return None
    rate = turn.speech[0].sample_rate
    gap = np.zeros(int(0.25 * rate), dtype=np.float32)
    parts = []
    for s in turn.speech:
        parts += [np.asarray(s.samples, dtype=np.float32), gap]
    return rate, np.concatenate(parts)


def respond(text, image, audio, tour_id, language, speak, chat, state):
    """One visitor turn; yields (chat, sources, card, photo, speech, state, text box, notice) as it streams."""
    state = state or DialogueState()
    state.language_override = None if language in (None, "", "auto") else language
    chat = list(chat or [])
    guide = get_guide()
    try:
        user_shown = text or ("🎤 …" if audio is not None else "📷 …" if image is not None else "")
        chat.append({"role": "user", "content": user_shown})
        chat.append({"role": "assistant", "content": ""})
        turn = None
        for turn in stream_turn(guide, state, text=text, audio=audio, image=image, tour=tour_id, speak=speak):
            if turn.transcript is not None and turn.question:
                chat[-2]["content"] = f"🎤 {turn.question}"
            chat[-1]["content"] = turn.answer
            card, photo = _card(guide, turn, tour_id) if turn.done else (gr.skip(), gr.skip())
            yield (chat, _sources_md(turn), card, photo, _speech_audio(turn) if turn.done else None,
                   state, "", turn.notice or "")
    except GuideError as e:
        chat[-1]["content"] = str(e)
        yield chat, "", "", None, None, state, text, str(e)
    except Exception:  # one visitor's failure must never take the app down
        log.exception("turn failed")
        msg = "Sorry, something went wrong on my side. Please try again."
        chat[-1]["content"] = msg
        yield chat, "", "", None, None, state, text, msg


def build_ui(*, kiosk: bool = False, idle_reset_s: int = 120) -> gr.Blocks:
    config = load_config()
    from guide.tours import list_tours

    tours = list_tours(config.tours_dir)
    default_tour = config.default_tour if config.default_tour in tours else (tours[0] if tours else None)
    with gr.Blocks(title="Tour guide") as demo:
        state = gr.State(DialogueState())
        gr.Markdown("# 🗺️ Your tour guide\nAsk by typing, speaking or showing a photo — in your own language.")
        with gr.Row():
            tour = gr.Dropdown(tours, value=default_tour, label="Tour", scale=2)
            language = gr.Dropdown(["auto", "en", "fr", "de", "es", "it", "zh", "ja"], value="auto",
                                   label="Answer language", scale=1)
            speak = gr.Checkbox(value=True, label="Speak the answer", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", height=480 if not kiosk else 620)
                notice = gr.Markdown(elem_id="notice")
                with gr.Row():
                    text = gr.Textbox(label="Your question", placeholder="e.g. When was the Eiffel Tower built?",
                                      scale=5, lines=1)
                    send = gr.Button("Ask", variant="primary", scale=1)
                with gr.Row():
                    image = gr.Image(sources=["upload", "webcam"], type="filepath", label="Photo", height=200)
                    audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Speak")
                speech = gr.Audio(label="Spoken answer", autoplay=True, interactive=False)
                clear = gr.Button("New conversation")
                gr.Examples(EXAMPLES, inputs=text, label="Try asking")
            with gr.Column(scale=2):
                card = gr.Markdown(label="Attraction")
                card_photo = gr.Image(label="Reference photo", interactive=False, height=220)
                sources = gr.Markdown(label="Sources")

        inputs = [text, image, audio, tour, language, speak, chat, state]
        outputs = [chat, sources, card, card_photo, speech, state, text, notice]
        send.click(respond, inputs, outputs, concurrency_limit=2)
        text.submit(respond, inputs, outputs, concurrency_limit=2)

        def reset(_state):
            return [], "", "", None, None, DialogueState(), "", "", None, None

        clear_outputs = [chat, sources, card, card_photo, speech, state, text, notice, image, audio]
        clear.click(reset, [state], clear_outputs)
        tour.change(reset, [state], clear_outputs)
        if kiosk:
            timer = gr.Timer(idle_reset_s)
            timer.tick(reset, [state], clear_outputs)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the tour guide app.")
    parser.add_argument("--kiosk", action="store_true", help="full-screen touch layout on localhost")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--idle-reset", type=int, default=120, help="kiosk: seconds before a new conversation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    get_guide()  # load models and build stale indexes before the first visitor arrives
    demo = build_ui(kiosk=args.kiosk, idle_reset_s=args.idle_reset)
    demo.queue(default_concurrency_limit=2, max_size=32)
    demo.launch(server_name="127.0.0.1" if args.kiosk else args.host, server_port=args.port,
                css=KIOSK_CSS if args.kiosk else None, theme=gr.themes.Soft())


if __name__ == "__main__":
    main()
