"""Supervised LoRA fine-tuning of the answer LLM: data -> training -> before/after evaluation -> adapter.

    python -m guide finetune --tour paris            # the offline 0.5B base, on this machine's CPU
    python -m guide finetune --tour paris --preset tiny   # a tiny random model, seconds (tests)

One run writes a folder (runs/finetune-<tour>-<time>/): the dataset (jsonl per split), checkpoints,
the adapter (peft + GGUF for llama.cpp + manifest), and report.md / report.json. When the adapter
beats the base on the held-out attractions without refusing less, it is published to
adapters/<base>/ and served by default from then on.

This module holds the training loop, the export and the run; the base models are in ft_base, the
curation of the training data in ft_curate, the before/after gate in ft_gate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .config import ROOT, GuideConfig, cpu_flags, dev_data_dir, load_config
from .errors import GuideError
from .ft_base import base_identity, load_base, tiny_base
from .ft_curate import (  # noqa: F401 (names imported from guide.finetune before the split)
    _asks_person,
    _refuses,
    _subsample,
    cap_refusals,
    distil,
    eval_with_llm,
    pair_refusals,
    teacher_examples,
    written_questions,
)
from .ft_gate import (  # noqa: F401 (the same)
    _cached_json,
    _serving_llm,
    _summary_line,
    compare_backends,
    format_comparison,
    format_report,
    held_out_questions,
    served_check,
    verdict,
)
from .ftdata import Example, build_dataset, data_hash, dataset_stats, load_jsonl, save_jsonl

__all__ = ["FinetuneConfig", "PRESETS", "load_base", "encode", "train", "run_finetune", "tiny_base"]

log = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FinetuneConfig:
    tour: str = "paris"
    base: str = "qwen2.5-0.5b"  # a GGUF model pack (loaded de-quantized), a hub id, a local folder, or "tiny"
    seed: int = 0
    # data
    qa_dir: Path | None = field(default_factory=lambda: dev_data_dir() / "qa")  # dialogue sets, used when present
    per_set: int = 40  # examples taken from each dialogue set
    dev_attractions: int = 2
    test_attractions: int = 3
    max_train_examples: int | None = None  # subsample (by kind, evenly) to fit a time budget
    teacher: bool = True  # the base's own right answers to the training attractions' written questions
    distil: bool = True  # ... and to the generated questions, kept where right (else the composed answer)
    teacher_quotes: bool = True  # a written question the base gets wrong: the source sentence (False: left out)
    max_refusal_share: float | None = None  # at most this share of training targets are "I don't know"
    pair_refusals: bool = False  # each "I don't know" next to an answered question on the same attraction
    max_length: int = 1280  # tokens; longer examples are dropped
    # LoRA and optimisation
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 8
    max_steps: int = 120  # optimizer steps
    grad_accum: int = 4  # examples per optimizer step
    max_grad_norm: float = 1.0
    dtype: str = "auto"  # float32 | bfloat16 | auto (bf16 where the hardware has it)
    # early stopping and checkpoints
    eval_every: int = 15  # optimizer steps between dev-loss evaluations (and checkpoints)
    patience: int = 3  # evaluations without improvement before stopping
    max_dev_examples: int = 24
    time_budget_s: float | None = None  # stop training after this long (the best checkpoint is kept)
    # evaluation
    evaluate: bool = True  # answer-level before/after evaluation on the test split
    max_test_questions: int | None = None  # the written eval set's questions first, then generated ones
    max_test_loss_examples: int | None = None
    publish: bool = True  # publish the adapter when it beats the base
    served_check: bool = True  # also ask the held-out written questions of the guide as served (guards on)
    compare_prompts: int = 4  # test prompts answered by both backends (transformers, llama.cpp), greedy
    run_dir: Path | None = None

    def replace(self, **changes) -> FinetuneConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, dict] = {
    # the real run on a 2-core CPU (run 19 of the README: run 17's 112 steps of 224 examples — the 166
    # written ones, with train.yaml's written answers, left 26 of 192 for the generated kinds; refusal
    # targets 7 % — plus each refusal target paired with an answered question on its attraction,
    # which took the false refusals of runs 14-18 to none). 112 steps take 1600 s with bf16 (14 s a
    # step) and 4240 s in fp32 on a CPU without it (38 s a step); the budget lets both finish, since
    # a run the budget cuts short is worse than the base (run 19's first part, stopped at step 42)
    "offline": {"max_train_examples": 224, "grad_accum": 2, "max_steps": 112, "lr": 2e-4, "eval_every": 20,
                "max_dev_examples": 12, "time_budget_s": 5000, "max_test_questions": 72,
                "max_test_loss_examples": 30, "max_refusal_share": 0.07, "teacher_quotes": False,
                "pair_refusals": True},
    # a larger base where a GPU is available
    "gpu": {"base": "Qwen/Qwen2.5-1.5B-Instruct", "max_steps": 300, "grad_accum": 8, "per_set": 200,
            "max_dev_examples": 64, "eval_every": 25},
    # a tiny random model built from a config: the whole loop in seconds, for tests
    "tiny": {"base": "tiny", "max_steps": 30, "grad_accum": 1, "eval_every": 5, "patience": 2, "lr": 3e-3,
             "warmup_steps": 2, "max_dev_examples": 4, "per_set": 0, "max_train_examples": 8, "evaluate": False,
             "publish": False, "dtype": "float32", "max_length": 4096},
}


def _dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16
        return torch.bfloat16 if cpu_flags() & {"avx512_bf16", "amx_bf16"} else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


# --- data encoding --------------------------------------------------------------------------------

def encode(tok, messages: list[dict], max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels of one chat example: loss only on the final assistant message."""
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise GuideError("the chat template does not extend the prompt with the answer; cannot mask the loss")
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if len(p_ids) + len(c_ids) > max_length:
        return None
    return p_ids + c_ids, [-100] * len(p_ids) + c_ids


# --- training ---------------------------------------------------------------------------------------

def _loss(model, ids, labels, device):
    """Mean cross-entropy over the answer tokens; logits are computed for the answer only.

    The answer is the end of the sequence, so `logits_to_keep` skips the vocabulary projection of
    the whole prompt (151k-way for Qwen: a large share of the compute on a CPU).
    """
    import torch
    import torch.nn.functional as F

    start = next(i for i, t in enumerate(labels) if t != -100)
    x = torch.tensor([ids], device=device)
    out = model(input_ids=x, logits_to_keep=len(ids) - start + 1)
    logits = out.logits[0, :-1].float()
    return F.cross_entropy(logits, torch.tensor(labels[start:], device=device))


def mean_loss(model, encoded: list[tuple[list[int], list[int]]], device: str = "cpu", *, progress: bool = False,
              desc: str = "loss") -> float:
    """Token-weighted mean loss over examples (no gradients)."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for ids, labels in tqdm(encoded, desc=desc, disable=not progress, leave=False):
            n = sum(1 for t in labels if t != -100)
            total += _loss(model, ids, labels, device).item() * n
            count += n
    if was_training:
        model.train()
    return total / max(count, 1)


def _lr_at(step: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_dev_loss: float
    stopped: str  # max_steps | early_stopping | time_budget
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    peak_memory_gib: float = 0.0  # GPU: max allocated by torch; CPU: the process's peak resident memory


def train(model, tok, train_rows: list[Example], dev_rows: list[Example], cfg: FinetuneConfig, run_dir: Path, *,
          device: str = "cpu", resume: bool = False, progress: bool = True):
    """LoRA-train `model` (a peft model) in place; the best adapter (by dev loss) is saved to run_dir/best.

    A checkpoint (adapter, optimizer, step, data position, RNG) is written at every evaluation;
    with resume=True training continues from it exactly.
    """
    import torch

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint"
    enc_train = [e for e in (encode(tok, r.messages, cfg.max_length) for r in train_rows) if e]
    enc_dev = [e for e in (encode(tok, r.messages, cfg.max_length) for r in dev_rows[:cfg.max_dev_examples]) if e]
    if not enc_train:
        raise GuideError("no training example fits max_length")
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=cfg.lr)
    state = {"step": 0, "best": float("inf"), "best_step": 0, "bad": 0, "history": [], "seconds": 0.0}
    if resume and (ckpt / "state.json").is_file():
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        state = json.loads((ckpt / "state.json").read_text())
        torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True))
        log.info("resumed from %s at step %d", ckpt, state["step"])
    order_rng = random.Random(cfg.seed)
    order: list[int] = []
    for _ in range((cfg.max_steps * cfg.grad_accum) // len(enc_train) + 1):
        perm = list(range(len(enc_train)))
        order_rng.shuffle(perm)
        order += perm
    model.train()
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=_dtype(cfg.dtype) == torch.bfloat16)
    stopped = "max_steps"
    t0 = time.perf_counter() - state["seconds"]
    bar = tqdm(total=cfg.max_steps, initial=state["step"], desc="fine-tuning", unit="step", disable=not progress)
    while state["step"] < cfg.max_steps:
        step = state["step"]
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        total = 0.0
        for j in range(cfg.grad_accum):
            ids, labels = enc_train[order[(step * cfg.grad_accum + j) % len(order)]]
            with autocast:
                loss = _loss(model, ids, labels, device) / cfg.grad_accum
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", lr=f"{_lr_at(step, cfg):.1e}")
        state["history"].append({"step": state["step"], "loss": round(total, 4), "grad_norm": round(float(norm), 3)})
        last = state["step"] == cfg.max_steps
        over_time = cfg.time_budget_s is not None and state["seconds"] > cfg.time_budget_s
        if state["step"] % cfg.eval_every == 0 or last or over_time:
            with autocast:
                dev = mean_loss(model, enc_dev, device) if enc_dev else total
            state["history"][-1]["dev_loss"] = round(dev, 4)
            bar.write(f"step {state['step']}: train loss {total:.3f}, dev loss {dev:.3f}")
            if dev < state["best"] - 1e-4:
                state.update(best=dev, best_step=state["step"], bad=0)
                model.save_pretrained(run_dir / "best")
            else:
                state["bad"] += 1
            _checkpoint(model, opt, state, ckpt)
            if state["bad"] >= cfg.patience:
                stopped = "early_stopping"
                break
            if over_time:
                stopped = "time_budget"
                break
    bar.close()
    seconds = time.perf_counter() - t0
    return TrainResult(steps=state["step"], best_step=state["best_step"], best_dev_loss=state["best"], stopped=stopped,
                       history=state["history"], seconds=round(seconds, 1),
                       seconds_per_step=round(seconds / max(1, state["step"]), 2), peak_memory_gib=_peak_memory(device))


def _peak_memory(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB on Linux
    except (ImportError, OSError):
        return 0.0


def _checkpoint(model, opt, state: dict, ckpt: Path) -> None:
    """Write the checkpoint to a temporary folder, then swap it in (a crash keeps the previous one)."""
    import shutil

    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()},
              str(tmp / "adapter.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    torch.save(torch.get_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)


def add_lora(model, cfg: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.targets), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, lora)


# --- the whole run -------------------------------------------------------------------------------------

def _guide_for_data(gcfg: GuideConfig, tour_id: str):
    from .answer import ExtractiveLLM
    from .pipeline import Guide

    return Guide.load(gcfg, tours=[tour_id], llm=ExtractiveLLM(), progress=False)


def run_finetune(cfg: FinetuneConfig, *, gcfg: GuideConfig | None = None, resume: Path | None = None,
                 progress: bool = True) -> dict:
    """Build data, evaluate the base, train, evaluate again, export and (maybe) publish the adapter."""
    import torch

    from .adapters import export_gguf_lora, publish
    from .evaluate import machine_description, rescore

    gcfg = (gcfg or load_config()).replace(answer_guards=False, adapter="none")
    run_dir = Path(resume or cfg.run_dir or ROOT / "runs" / f"finetune-{cfg.tour}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), default=str, indent=1))
    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)

    # 1. data
    t = time.perf_counter()
    guide = _guide_for_data(gcfg, cfg.tour)
    tour = guide.tour(cfg.tour)
    split, data = build_dataset(guide, tour, seed=cfg.seed, qa_dir=cfg.qa_dir, per_set=cfg.per_set,
                                dev_attractions=cfg.dev_attractions, test_attractions=cfg.test_attractions)
    identity = None if cfg.base == "tiny" else base_identity(cfg.base, gcfg.cache_dir)  # tiny: made from the data
    teacher = None
    saved = {name: run_dir / "data" / f"{name}.jsonl" for name in ("train", "dev", "test")}
    if resume is not None and all(f.is_file() for f in saved.values()):
        # the checkpoint was trained on these examples (its data position indexes them); rebuilding
        # would ask the base again for every distilled target, and its answers are not bit-stable
        # across machines, so a resumed run could go on with a different training set
        data = {name: load_jsonl(f) for name, f in saved.items()}
        log.info("resuming on the run's own data in %s", run_dir / "data")
        report_teacher = {"reused": str(run_dir / "data")}
    else:
        if cfg.teacher and cfg.evaluate and identity is not None:
            # the base answers the written questions of the training attractions (see teacher_examples);
            # they all go in, the generated examples fill the rest of the budget
            teacher = _serving_llm(identity, gcfg, adapter=None)
            written, report_teacher = teacher_examples(guide, tour, teacher, split.train, progress=progress,
                                                       cache=run_dir / "teacher.json", model_key=identity["sha256"],
                                                       quotes=cfg.teacher_quotes)
        else:
            written, report_teacher = [], None
        room = None if cfg.max_train_examples is None else max(0, cfg.max_train_examples - len(written))
        capped = cap_refusals(written, data["train"], cfg.max_refusal_share, cfg.max_train_examples)
        generated = _subsample(capped, room, cfg.seed)
        if cfg.pair_refusals:
            generated = pair_refusals(written, generated, capped)
        if teacher is not None and cfg.distil:
            generated, report_distil = distil(teacher, generated, tour, progress=progress)
            report_teacher = {**(report_teacher or {}), "generated": report_distil}
        data["train"] = written + generated
        random.Random(cfg.seed).shuffle(data["train"])
        for name, rows in data.items():
            save_jsonl(rows, saved[name])
    stats = dataset_stats(data)
    log.info("split by attraction — train: %s; dev: %s; test: %s", ", ".join(split.train), ", ".join(split.dev),
             ", ".join(split.test))
    log.info("dataset built in %.0f s", time.perf_counter() - t)
    print(f"Dataset ({run_dir / 'data'}):\n{stats}\n", flush=True)

    # 2. base model with LoRA
    if identity is None:
        texts = [m["content"] for rows in data.values() for e in rows for m in e.messages]
        identity = base_identity(str(tiny_base(run_dir / "tiny-base", texts, seed=cfg.seed)), gcfg.cache_dir)
    t = time.perf_counter()
    tok, model = load_base(identity, device=device)
    log.info("base %s loaded in %.0f s", identity["name"], time.perf_counter() - t)
    model = add_lora(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    test_rows = _subsample(data["test"], cfg.max_test_loss_examples, cfg.seed)
    test_enc = [e for e in (encode(tok, r.messages, cfg.max_length) for r in test_rows) if e]

    report: dict = {"run_dir": str(run_dir), "machine": machine_description(), "device": device,
                    "base": {k: identity[k] for k in ("name", "sha256")}, "split": dataclasses.asdict(split),
                    "data_hash": data_hash(data), "examples": {k: len(v) for k, v in data.items()},
                    "trainable_parameters": trainable, "config": json.loads((run_dir / "config.json").read_text()),
                    "teacher": report_teacher}
    # 3a. before: loss on the test split, and answers through the eval harness
    with model.disable_adapter():
        report["before"] = {"test_loss": round(mean_loss(model, test_enc, device, progress=progress,
                                                         desc="test loss (base)"), 4)}
    questions = held_out_questions(split, data, tour, limit=cfg.max_test_questions, seed=cfg.seed)
    report["test_questions"] = len(questions)
    if cfg.evaluate:
        # the base's answers depend only on the base, the questions and the data: kept in the run
        # folder, so a resumed run (or a run started in a folder holding them) does not redo them
        held_out = data_hash({"dev": data["dev"], "test": data["test"]})  # not the training examples
        key = [identity["sha256"], held_out, [[q.id, q.question] for q in questions]]
        report["before"]["answers"] = rescore(_cached_json(
            run_dir / "before.json", key, "answers",
            lambda: eval_with_llm(guide, cfg.tour, teacher or _serving_llm(identity, gcfg, adapter=None),
                                  questions, progress)), tour, questions)
        log.info("base on the test split: %s", _summary_line(report["before"]["answers"]["summary"]))

    teacher = None  # free the llama.cpp base before training
    # 4. train
    result = train(model, tok, data["train"], data["dev"], cfg, run_dir, device=device,
                   resume=resume is not None, progress=progress)
    report["training"] = dataclasses.asdict(result)
    best = run_dir / "best" / "adapter_model.safetensors"
    if best.is_file():  # evaluate and ship the best checkpoint, not the last
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(best)))
    model.eval()
    # 3b. after
    report["after"] = {"test_loss": round(mean_loss(model, test_enc, device, progress=progress,
                                                    desc="test loss (tuned)"), 4)}
    for key in ("before", "after"):
        report[key]["test_perplexity"] = round(math.exp(report[key]["test_loss"]), 2)

    # 5. the adapter: peft for transformers, GGUF for llama.cpp, manifest
    adapter_dir = run_dir / "adapter"
    model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)  # so transformers can load base + adapter without the GGUF's tokenizer
    from peft import get_peft_model_state_dict

    if identity.get("arch") == "qwen2":
        export_gguf_lora(get_peft_model_state_dict(model), adapter_dir / "adapter.gguf", alpha=cfg.lora_alpha)
    manifest = {"base": {k: identity[k] for k in ("name", "sha256")}, "tour": cfg.tour, "data_hash": report["data_hash"],
                "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": list(cfg.targets)},
                "prompt": {"example": False}, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "gguf": "adapter.gguf" if (adapter_dir / "adapter.gguf").is_file() else None,
                "metrics": {k: {"test_loss": report[k]["test_loss"]} for k in ("before", "after")}}
    (adapter_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if cfg.evaluate:
        tuned = _serving_llm(identity, gcfg, adapter=adapter_dir)
        report["after"]["answers"] = eval_with_llm(guide, cfg.tour, tuned, questions, progress)
        log.info("tuned on the test split: %s", _summary_line(report["after"]["answers"]["summary"]))
        if cfg.served_check:
            report["served"] = served_check(guide, tour, split.test + split.dev, tuned,
                                            lambda: _serving_llm(identity, gcfg, adapter=None),
                                            cache=run_dir / "served-before.json", model_key=identity["sha256"],
                                            progress=progress)
        del tuned
        for key in ("before", "after"):
            manifest["metrics"][key] = report[key]["answers"]["summary"]
        (adapter_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if identity.get("gguf_file") and cfg.compare_prompts:
        prompts = [e.messages[:-1] for e in _subsample(data["test"], cfg.compare_prompts, cfg.seed + 1)]
        report["backends"] = compare_backends(adapter_dir, prompts, cache_dir=gcfg.cache_dir, model=model, tok=tok)
        log.info("backends:\n%s", format_comparison(report["backends"]))
    del model
    report["verdict"] = verdict(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    if cfg.publish and report["verdict"]["better"]:
        report["published"] = str(publish(adapter_dir, identity["name"]))
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str))
    (run_dir / "report.md").write_text(format_report(report))
    return report
