"""The fine-tuning gate: the before/after evaluation, the guide as served, and the verdict that publishes.

The base and the tuned model answer the held-out questions (held_out_questions) through the eval
harness; the written ones are also asked of the guide as a visitor gets it, guards on (served_check).
`verdict` decides whether the adapter is better and may be published; `format_report` writes the
before/after table, and `compare_backends` puts transformers and llama.cpp side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from .config import GuideConfig
from .ft_base import base_identity, load_base
from .ft_curate import _atomic_write, _digest, _subsample, eval_with_llm, written_questions
from .ftdata import Example

__all__ = ["held_out_questions", "served_check", "verdict", "written_summary", "compare_backends",
           "format_comparison", "format_report", "serving_code_hash"]

log = logging.getLogger(__name__)


def held_out_questions(split, data: dict[str, list[Example]], tour, *, limit: int | None = None, seed: int = 0) -> list:
    """Eval questions no training example touches: the tour's written eval set on the test and dev
    attractions (varied questions, written by people), then generated ones on the test attractions."""
    from .evaluate import EvalQuestion

    written = written_questions(tour, split.test + split.dev)
    room = None if limit is None else max(0, limit - len(written))
    generated = []
    for e in _subsample(data["test"], room, seed):
        kind = {"switch": "followup"}.get(e.kind, e.kind)
        generated.append(EvalQuestion(id=e.id, lang=e.lang, type=kind, question=e.question,
                                      attractions=(e.attraction,) if e.attraction else (), expect=tuple(e.expect),
                                      history=tuple(e.history)))
    return (written + generated)[:limit]


def _serving_llm(identity: dict, gcfg: GuideConfig, adapter: Path | None):
    """The LLM as the guide would serve it: a model pack through load_llm (llama.cpp, the GGUF LoRA and
    the prompt settings of the adapter's manifest), any other base on transformers."""
    from .answer import TransformersLLM, load_llm

    if identity.get("gguf_file"):
        return load_llm(identity["name"], cache_dir=gcfg.cache_dir, n_ctx=gcfg.llm_context, threads=gcfg.threads,
                        device=gcfg.device, adapter=str(adapter) if adapter else "none")
    llm = TransformersLLM(identity["path"], device=gcfg.device, adapter=str(adapter) if adapter else None)
    llm.prompt_example = adapter is None  # the tuned model is trained without the worked example
    return llm


def _cached_json(path: Path, key, field: str, compute):
    """`compute()`, kept in `path` under `field` with a hash of `key`, and reused while the key holds."""
    digest = _digest(key)
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("key") == digest:
        log.info("%s reused from %s", field, path)
        return cached[field]
    value = compute()
    _atomic_write(path, json.dumps({"key": digest, field: value}, ensure_ascii=False))
    return value


def serving_code_hash() -> str:
    """sha256 of the guide's serving code (all of guide/ but the fine-tuning modules): what decides
    how the guide answers, guards included, for a given model."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name not in ("finetune.py", "ft_base.py", "ft_curate.py", "ft_gate.py", "ftdata.py", "ftdata_phrases.py",
                             "ftdata_sets.py", "cli.py"):
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def served_check(guide, tour, attractions, tuned, base, *, cache: Path, model_key: str, progress: bool) -> dict:
    """The written eval questions of the held-out attractions answered by the guide as a visitor gets
    it — guards on (concept check, echo retry, invented-number withdrawal) — with the base and with
    the tuned model. The fine-tuning report scores the model alone (guards off); before this check
    was part of the gate, run 10 passed that gate and was served worse than the base (0.72 vs 0.80).
    `base` is a callable returning the base LLM; its answers are kept in `cache`."""
    questions = written_questions(tour, attractions)
    key = [model_key, serving_code_hash(), tour.content_hash, [[q.id, q.question] for q in questions]]
    from .evaluate import rescore

    before = rescore(_cached_json(cache, key, "answers", lambda: eval_with_llm(guide, tour.id, base(), questions,
                                                                                 progress, guards=True)), tour, questions)
    after = eval_with_llm(guide, tour.id, tuned, questions, progress, guards=True)
    log.info("served, base: %s", _summary_line(before["summary"]))
    log.info("served, tuned: %s", _summary_line(after["summary"]))
    return {"questions": len(questions), "before": before, "after": after}


def verdict(report: dict) -> dict:
    """Whether the tuned model beats the base: facts and language up (or equal), refusals not down and
    false refusals not up; and, where the served check ran, the guide as served not worse on any of
    these. (Run 11 declined "Can I go inside?" in five languages of six, which no check then asked.)"""
    if "answers" not in report.get("after", {}):
        better = report["after"]["test_loss"] < report["before"]["test_loss"]
        return {"better": better, "why": "test loss only (no answer evaluation)"}
    b, a = report["before"]["answers"]["summary"], report["after"]["answers"]["summary"]
    wb, wa = written_summary(report["before"]["answers"]), written_summary(report["after"]["answers"])
    # the written questions are asked as visitors ask; the generated ones only as the training data does
    written = _not_worse(wa, wb)["fact_accuracy"]
    ok = _not_worse(a, b)
    facts = ok["fact_accuracy"] and written
    refuse = ok["refusals"] and ok["false_refusals"]
    gained = (a["fact_accuracy"] or 0) > (b["fact_accuracy"] or 0) or (a["language_match"] or 0) > (b["language_match"] or 0)
    out = {"better": facts and ok["language_match"] and refuse and gained, "facts": facts, "written_facts": written,
           "language": ok["language_match"], "refusals": refuse}
    if report.get("served"):
        out["served"] = all(_not_worse(report["served"]["after"]["summary"], report["served"]["before"]["summary"]).values())
        out["better"] = out["better"] and out["served"]
    return out


def _not_worse(after: dict, before: dict) -> dict:
    """Per gate measure, whether `after` is at least as good as `before` (false refusals: lower is better)."""
    out = {k: (after[k] or 0) >= (before[k] or 0) for k in ("fact_accuracy", "language_match", "refusals")}
    out["false_refusals"] = (after["false_refusals"] or 0) <= (before["false_refusals"] or 0)
    return out


def written_summary(answers: dict) -> dict:
    """The eval summary over the written questions only (eval.yaml ids; generated ids hold a '/')."""
    from .evaluate import summarize

    return summarize([r for r in answers["rows"] if "/" not in r["id"]])


def _summary_line(summary: dict) -> str:
    keys = ("fact_accuracy", "followup_accuracy", "language_match", "refusals", "false_refusals", "citation_validity")
    return ", ".join(f"{k} {summary.get(k)}" for k in keys)


def compare_backends(adapter_dir: Path, prompts: list[list[dict]], *, cache_dir: Path, max_tokens: int = 48,
                     model=None, tok=None) -> list[dict]:
    """Greedy answers of both serving backends for the same prompts, with and without the adapter.

    transformers runs the de-quantized base + the peft adapter; llama.cpp runs the Q4_K_M GGUF + the
    GGUF LoRA. The rows without the adapter show how far the two backends differ by themselves.
    """
    import torch
    from peft import PeftModel

    from .adapters import check_base, read_manifest
    from .answer import LlamaCppLLM

    adapter_dir = Path(adapter_dir)
    manifest = read_manifest(adapter_dir)
    identity = base_identity(manifest["base"]["name"], cache_dir)
    check_base(manifest, base_name=identity["name"], base_sha256=identity["sha256"], folder=adapter_dir)
    if model is None:
        tok, base = load_base(identity)
        model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    gguf = Path(identity["path"]) / identity["gguf_file"]
    rows = []
    for with_adapter in (False, True):
        llama = LlamaCppLLM(gguf, n_ctx=2048, name="llama.cpp",
                            lora_path=str(adapter_dir / manifest["gguf"]) if with_adapter else None)
        for i, messages in enumerate(prompts):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            with torch.no_grad():
                if with_adapter:
                    out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
                else:
                    with model.disable_adapter():
                        out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                             pad_token_id=tok.pad_token_id)
            hf = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            cpp = "".join(llama.stream(messages, max_tokens=max_tokens)).strip()
            rows.append({"prompt": i, "adapter": with_adapter, "transformers": hf, "llama_cpp": cpp,
                         "same": hf == cpp})
        del llama
    return rows


def format_comparison(rows: list[dict]) -> str:
    lines = ["| prompt | adapter | same | transformers | llama.cpp |", "|---|---|---|---|---|"]
    for r in rows:
        clip = [t.replace("|", "/").replace("\n", " ")[:70] for t in (r["transformers"], r["llama_cpp"])]
        lines.append(f"| {r['prompt']} | {'yes' if r['adapter'] else 'no'} | {'yes' if r['same'] else 'NO'} | "
                     f"{clip[0]} | {clip[1]} |")
    for flag in (False, True):
        part = [r for r in rows if r["adapter"] == flag]
        if part:
            lines.append(f"\n{'with' if flag else 'without'} the adapter: {sum(r['same'] for r in part)}/{len(part)} "
                         "identical greedy answers")
    return "\n".join(lines)


_COLS = ["test_loss", "test_perplexity", "fact_accuracy", "followup_accuracy", "language_match", "refusals",
         "false_refusals", "citation_validity", "median_seconds"]


def format_report(report: dict) -> str:
    def val(side, key):
        v = report[side].get(key)
        if v is None:
            v = report[side].get("answers", {}).get("summary", {}).get(key)
        return "–" if v is None else (f"{v:.3f}" if key == "test_loss" else f"{v:.2f}" if isinstance(v, float) else str(v))

    tr = report["training"]
    lines = [f"# Fine-tuning report: {report['base']['name']} on tour `{report['config']['tour']}`", "",
             f"Machine: {report['machine']} ({report['device']})", "",
             f"Examples: {report['examples']}; test questions: {report.get('test_questions')}; "
             f"trainable parameters: {report['trainable_parameters']:,}", "",
             f"Split by attraction — test: {', '.join(report['split']['test'])}; "
             f"dev: {', '.join(report['split']['dev'])}", "",
             f"Training: {tr['steps']} steps ({tr['stopped']}), best dev loss {tr['best_dev_loss']:.3f} at step "
             f"{tr['best_step']}, {tr['seconds']:.0f} s ({tr['seconds_per_step']:.1f} s/step, "
             f"{report['config']['grad_accum']} examples/step), peak memory {tr.get('peak_memory_gib', 0):.1f} GiB", "",
             "| | " + " | ".join(c.replace("_", " ") for c in _COLS) + " |", "|" + "---|" * (len(_COLS) + 1)]
    for side in ("before", "after"):
        lines.append(f"| {side} | " + " | ".join(val(side, c) for c in _COLS) + " |")
    def answers_row(label: str, w: dict) -> str:
        return f"| {label} ({w['questions']}) | – | – | " + " | ".join(
            "–" if w.get(c) is None else f"{w[c]:.2f}" for c in _COLS[2:]) + " |"

    if "answers" in report["after"]:
        for side in ("before", "after"):
            lines.append(answers_row(f"{side}, written questions only", written_summary(report[side]["answers"])))
    if report.get("served"):
        for side in ("before", "after"):
            lines.append(answers_row(f"{side}, served with guards on, written questions",
                                     report["served"][side]["summary"]))
    lines += ["", f"Verdict: {report['verdict']}", ""]
    if report.get("backends"):
        lines += ["Both serving backends, greedy, on held-out prompts:", "", format_comparison(report["backends"]), ""]
    if report.get("published"):
        lines.append(f"Published to {report['published']} (served by default from now on).")
    return "\n".join(lines) + "\n"
