"""`python -m guide ...`: index, ask, eval, finetune, bench, doctor, validate, photos."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .bench import BENCHES
from .config import PROFILES, load_config
from .errors import GuideError

__all__ = ["main"]

log = logging.getLogger("guide")


def _config(args):
    return load_config(args.profile, llm=getattr(args, "llm", None), embedder=getattr(args, "embedder", None))


def cmd_index(args) -> int:
    from .retrieval import build_index, load_embedder
    from .tours import load_tour

    config = _config(args)
    embedder = load_embedder(config.embedder, threads=config.threads, device=config.device)
    for path in args.tours or [config.tours_dir / t for t in _all_tours(config)]:
        tour = load_tour(path)
        index = build_index(tour, embedder, config.index_dir)
        print(f"{tour.id}: {len(index.passages)} passages -> {config.index_dir / tour.id}")
    return 0


def _all_tours(config):
    from .tours import list_tours

    return list_tours(config.tours_dir)


def cmd_validate(args) -> int:
    from .errors import TourError
    from .tours import load_tour

    config = _config(args)
    bad = 0
    for path in args.tours or [config.tours_dir / t for t in _all_tours(config)]:
        try:
            tour = load_tour(path)
            print(f"{tour.id}: ok, {len(tour.attractions)} attractions in {', '.join(tour.languages)}")
            others = [c for c in tour.languages if c not in tour.texts_in()]
            if others:
                print(f"  texts written in {', '.join(tour.texts_in())}; visitors in {', '.join(others)} are answered "
                      f"in their language from those texts (cross-lingual retrieval); attraction names as the tour "
                      f"writes them where it gives none in their language")
        except TourError as e:
            print(e, file=sys.stderr)
            bad += 1
    return 1 if bad else 0


def cmd_ask(args) -> int:
    from .dialogue import DialogueState
    from .pipeline import Guide, stream_turn

    config = _config(args)
    guide = Guide.load(config, tours=[args.tour] if args.tour else None)
    state = DialogueState(tour=args.tour, language_override=args.lang)
    questions = args.question or []
    if not questions and not (args.image or args.audio):
        questions = [line.strip() for line in sys.stdin if line.strip()]
    inputs = [{"text": q} for q in questions] or [{}]
    if args.image or args.audio:
        inputs[0].update(image=args.image, audio=args.audio)
    for item in inputs:
        printed = ""
        turn = None
        for turn in stream_turn(guide, state, tour=args.tour, speak=bool(args.speak), **item):
            if turn.answer.startswith(printed):
                sys.stdout.write(turn.answer[len(printed):])
            else:  # the guide withdrew what it had started to say
                sys.stdout.write("\n" + turn.answer)
            sys.stdout.flush()
            printed = turn.answer
        print()
        if turn.transcript is not None:
            print(f"  heard ({turn.transcript.language}): {turn.transcript.text}")
        if turn.recognition is not None:
            print(f"  seen: {getattr(turn.recognition, 'name', None)} ({getattr(turn.recognition, 'why', '')})")
        if turn.notice and turn.notice != turn.answer:
            print(f"  note: {turn.notice}")
        for i, h in enumerate(turn.passages, 1):
            mark = "*" if i in turn.citations else " "
            print(f" {mark}[{i}] {h.passage.title} ({h.passage.lang}, {h.passage.kind}) {h.passage.source}")
        if args.speak and turn.speech:
            from .tts import write_wav

            write_wav(args.speak, [*turn.preface_speech, *turn.speech])
            print(f"  spoken answer: {args.speak}")
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in turn.timings.items())
        print(f"  [{turn.language}; {timing}]")
    return 0


def cmd_eval(args) -> int:
    if args.asr:
        from .eval_speech import evaluate_asr, format_table, round_trip
        from .tours import load_tour

        config = _config(args)
        rows = evaluate_asr(args.asr, name=config.asr, backend=config.asr_backend, cache_dir=config.cache_dir)
        print(format_table(rows))
        # round trip: sentences of the tour in each of its languages, spoken, then transcribed back
        tour = load_tour(config.tours_dir / args.tour)
        texts = {lang: [a.descriptions[lang].split("\n")[0].split(". ")[0].split("。")[0] for a in tour.attractions[:3]
                        if a.descriptions.get(lang)] for lang in tour.languages}
        print(f"\nRound trip on tour {tour.id} (synthesised, transcribed back; CER):\n")
        print(format_table(round_trip(texts, name=config.asr, backend=config.asr_backend, cache_dir=config.cache_dir)))
        return 0
    if args.vision:
        from .eval_vision import evaluate_vision, format_table

        config = _config(args)
        print(format_table(evaluate_vision(args.vision, recognizer=config.vision, cache_dir=config.cache_dir,
                                           device=config.device)))
        return 0
    from .evaluate import evaluate_tour as run
    from .evaluate import failures, format_report, save_report
    from .pipeline import Guide

    config = _config(args)
    guide = Guide.load(config, tours=[args.tour])
    report = run(guide, args.tour, limit=args.limit)
    print(format_report(report))
    if args.json:
        save_report(report, args.json)
        print(f"\nfull report: {args.json}")
    if args.show_failures:
        for r in failures(report):
            print(f"- {r['id']} [{r['lang']}/{r['type']}] {r['question']}\n    -> {r['answer']}")
    return 0


def cmd_finetune(args) -> int:
    from .finetune import PRESETS, FinetuneConfig, run_finetune

    if args.check:
        return _check_backends(args)

    cfg = FinetuneConfig(**PRESETS[args.preset]).replace(
        tour=args.tour, base=args.base, max_steps=args.max_steps, time_budget_s=args.time_budget,
        max_train_examples=args.max_train_examples, max_test_questions=args.max_test_questions,
        seed=args.seed, run_dir=args.run_dir, lr=args.lr, max_refusal_share=args.refusal_share)
    if args.no_eval:
        cfg = cfg.replace(evaluate=False)
    if args.no_teacher_quotes:
        cfg = cfg.replace(teacher_quotes=False)
    if args.pair_refusals is not None:
        cfg = cfg.replace(pair_refusals=args.pair_refusals)
    if args.no_publish:
        cfg = cfg.replace(publish=False)
    if args.qa_dir is not None:
        cfg = cfg.replace(qa_dir=args.qa_dir)
    report = run_finetune(cfg, gcfg=_config(args), resume=args.resume)
    from .finetune import format_report

    print(format_report(report))
    print(f"report: {report['run_dir']}/report.md")
    return 0


def _check_backends(args) -> int:
    from .finetune import _subsample, compare_backends, format_comparison
    from .ftdata import load_jsonl

    adapter = Path(args.check)
    data = adapter.parent / "data" / "test.jsonl"
    if not data.is_file():
        raise GuideError(f"no held-out prompts next to the adapter ({data}); pass the adapter folder of a run")
    prompts = [e.messages[:-1] for e in _subsample(load_jsonl(data), args.prompts, 1)]
    rows = compare_backends(adapter, prompts, cache_dir=_config(args).cache_dir)
    print(format_comparison(rows))
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    print(run_bench(_config(args), quick=args.quick, only=args.only, turns=args.turns))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import report

    print(report(_config(args)))
    return 0


def cmd_photos(args) -> int:
    from .tours import load_tour
    from .vision import add_photos

    config = _config(args)
    tour = load_tour(config.tours_dir / args.tour)
    added = add_photos(tour, args.attraction, [Path(p) for p in args.images])
    print(f"added {len(added)} photo(s) to {tour.id}/{args.attraction}")
    return 0


def cmd_import(args) -> int:
    from .tour_import import read_places, write_tour

    only = None
    if args.places:
        only = [line.strip() for line in Path(args.places).read_text(encoding="utf-8").splitlines() if line.strip()]
    places = read_places(args.source, only=only)
    out = Path(args.out) if args.out else _config(args).tours_dir
    langs = [c.strip() for c in args.languages.split(",") if c.strip()]
    path = write_tour(places, out / args.id, tour_id=args.id, name=args.name or args.id.replace("-", " ").title(),
                      text_language=args.text_language, languages=langs, max_chars=args.max_chars,
                      overwrite=args.force)
    print(f"{path}: {len(places)} attractions, texts in {args.text_language}, answers in "
          f"{', '.join(dict.fromkeys([args.text_language, *langs]))}; edit it, then `python -m guide validate {path.parent}`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guide", description="A multimodal, multilingual tour guide.")
    parser.add_argument("--profile", choices=list(PROFILES), help="model profile (default: GUIDE_PROFILE or offline)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build the retrieval index of tours")
    p.add_argument("tours", nargs="*", type=Path, help="tour folders (default: every tour)")
    p.add_argument("--embedder")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("validate", help="check tour files and list every problem")
    p.add_argument("tours", nargs="*", type=Path)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("import", help="turn place texts (a folder of .txt/.md, or JSONL) into a tour skeleton")
    p.add_argument("source", help="a JSONL file (name or title, text, optional coordinates) or a folder of texts")
    p.add_argument("--id", required=True, help="the new tour's id (its folder name)")
    p.add_argument("--name", help="the tour's title (default: from the id)")
    p.add_argument("--text-language", default="en", help="the language the texts are written in (default en)")
    p.add_argument("--languages", default="en,fr,de,es,zh,ja", help="languages the tour answers in, comma-separated")
    p.add_argument("--places", help="a file of place names, one per line: import only these, in this order")
    p.add_argument("--max-chars", type=int, default=3000, help="keep whole paragraphs up to this many characters")
    p.add_argument("--out", help="the tours folder (default: the guide's)")
    p.add_argument("--force", action="store_true", help="replace an existing tour.yaml")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("ask", help="ask the guide (questions as arguments, or one per line on stdin)")
    p.add_argument("question", nargs="*")
    p.add_argument("--tour")
    p.add_argument("--lang", help="answer in this language instead of the question's")
    p.add_argument("--image", help="a photo of the attraction")
    p.add_argument("--audio", help="a spoken question (wav, ogg, mp3, flac...)")
    p.add_argument("--speak", metavar="WAV", help="also speak the answer into this wav file")
    p.add_argument("--llm")
    p.add_argument("--embedder")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", help="evaluate answers on a tour's eval set, or speech / vision on a data folder")
    p.add_argument("--tour", default="paris")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--show-failures", action="store_true")
    p.add_argument("--asr", type=Path, help="audio folder with transcripts.tsv: WER per language")
    p.add_argument("--vision", type=Path, help="images folder with labels.csv: recognition accuracy")
    p.add_argument("--llm")
    p.add_argument("--embedder")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("finetune", help="LoRA fine-tuning of the answer LLM, with a before/after evaluation")
    p.add_argument("--tour", default="paris")
    p.add_argument("--preset", choices=["offline", "gpu", "tiny"], default="offline")
    p.add_argument("--base", help="GGUF pack name, hub id or local model folder (default: the preset's)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--time-budget", type=float, help="seconds of training before stopping (best checkpoint kept)")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--no-teacher-quotes", action="store_true",
                   help="leave out written questions the base gets wrong (instead of quoting the source sentence)")
    p.add_argument("--refusal-share", type=float, help="most of the training set that may be \"I don't know\" targets")
    p.add_argument("--pair-refusals", action=argparse.BooleanOptionalAction, default=None,
                   help="each \"I don't know\" target beside an answered question on the same attraction "
                        "(default: the preset's)")
    p.add_argument("--max-test-questions", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--qa-dir", type=Path, help="dialogue sets folder (default ../shared/data/dev/qa when present)")
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the answer-level before/after evaluation")
    p.add_argument("--no-publish", action="store_true", help="do not make the adapter the default")
    p.add_argument("--check", type=Path, metavar="ADAPTER",
                   help="only compare transformers and llama.cpp greedy answers with this adapter")
    p.add_argument("--prompts", type=int, default=6, help="held-out prompts for --check")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("bench", help="latency benchmarks, printed as tables")
    p.add_argument("--quick", action="store_true", help="smaller synthetic corpus, fewer runs and turns")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), metavar="BENCH",
                   help=f"run only these benchmarks ({', '.join(BENCHES)})")
    p.add_argument("--turns", type=int, help="spoken turns for the first-audio benchmark (default 12, --quick 3)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("doctor", help="which model each stage uses, and why")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("photos", help="reference photos for recognition")
    photos = p.add_subparsers(dest="action", required=True)
    add = photos.add_parser("add", help="add reference photos to an attraction")
    add.add_argument("tour")
    add.add_argument("attraction")
    add.add_argument("images", nargs="+")
    add.set_defaults(func=cmd_photos)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except GuideError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
