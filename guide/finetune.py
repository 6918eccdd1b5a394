"""Supervised LoRA fine-tuning of the answer LLM: data -> training -> before/after evaluation -> adapter.

    python -m guide finetune --tour paris            # the offline 0.5B base, on this machine's CPU
    python -m guide finetune --tour paris --preset tiny   # a tiny random model, seconds (tests)

One run writes a folder (runs/finetune-<tour>-<time>/): the dataset (jsonl per split), checkpoints,
the adapter (peft + GGUF for llama.cpp + manifest), and report.md / report.json. When the adapter
beats the base on the held-out attractions without refusing less, it is published to
adapters/<base>/ and served by default from then on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .config import ROOT, GuideConfig, cpu_flags, dev_data_dir, load_config
from .errors import GuideError
from .ftdata import DONT_KNOW, Example, build_dataset, data_hash, dataset_stats, load_jsonl, save_jsonl

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


# --- models -------------------------------------------------------------------------------------

def tiny_base(folder: Path, texts: list[str], *, seed: int = 0) -> Path:
    """A tiny random Qwen2 model with a byte-level BPE tokenizer trained on `texts` (for tests)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, initializer_range=0.2, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = Qwen2ForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16
        return torch.bfloat16 if cpu_flags() & {"avx512_bf16", "amx_bf16"} else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def base_identity(base: str, cache_dir: Path) -> dict:
    """Name, sha256 and where to load a base model from (the GGUF pack's file, a folder or a hub id)."""
    from .models import PACKS, assemble_pack

    if base in PACKS:
        path = assemble_pack(base, cache_dir)
        return {"name": base, "sha256": PACKS[base].sha256, "path": str(path.parent), "gguf_file": path.name,
                "arch": "qwen2"}
    folder = Path(base)
    if folder.is_dir():
        from .models import sha256_file

        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        sha = sha256_file(weights[0]) if weights else None
        arch = json.loads((folder / "config.json").read_text()).get("model_type") if (folder / "config.json").is_file() else None
        return {"name": folder.name, "sha256": sha, "path": str(folder), "gguf_file": None, "arch": arch}
    return {"name": base, "sha256": None, "path": base, "gguf_file": None, "arch": None}


def load_base(identity: dict, *, dtype=None, device: str = "cpu"):
    """(tokenizer, model) of a base: GGUF packs are de-quantized by transformers (fp32 weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": identity["gguf_file"]} if identity.get("gguf_file") else {}
    tok = AutoTokenizer.from_pretrained(identity["path"], **kwargs)
    model = AutoModelForCausalLM.from_pretrained(identity["path"], dtype=dtype or torch.float32, **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model.to(device)


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


def _subsample(rows: list[Example], n: int | None, seed: int) -> list[Example]:
    """At most n examples, taking kinds and languages round-robin so none is crowded out."""
    if n is None or len(rows) <= n:
        return rows
    groups: dict[tuple, list[Example]] = {}
    for e in rows:
        groups.setdefault((e.kind, e.lang), []).append(e)
    rng = random.Random(seed)
    for g in groups.values():
        rng.shuffle(g)
    out, keys = [], sorted(groups)
    while len(out) < n:
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop())
    rng.shuffle(out)
    return out


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


def written_questions(tour, attractions, file: str = "eval.yaml") -> list:
    """The tour's written questions about the given attractions only: the eval set (eval.yaml), or
    the questions written for training alone (train.yaml, never used to evaluate)."""
    from .evaluate import load_eval_set

    path = tour.folder / file
    if not path.is_file():
        return []
    return [q for q in load_eval_set(path) if q.attractions and set(q.attractions) <= set(attractions)]


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


def teacher_examples(guide, tour, llm, attractions, *, progress: bool = True,
                     cache: Path | None = None, model_key: str = "", quotes: bool = True) -> tuple[list[Example], dict]:
    """The base's own answers to the written questions of training attractions, where they are right.

    Training only on the three generated fact kinds taught the model that every other question is
    one to decline (measured: false refusals 0.20 on the full eval set). These examples keep the
    base's answers to varied questions ("What was the Musée d'Orsay before it became a museum?")
    as targets where the answer holds the expected fact, in the visitor's language, with a valid
    citation (self-distillation); where the base is wrong, the shortest source sentence in the
    visitor's language that states the fact, cited. Unanswerable ones get "I don't know". Questions
    that need an earlier turn are left out. The prompt is the one the tuned model is served with.

    The questions are the eval set's (eval.yaml) and the ones written for training alone (train.yaml:
    about ten per attraction, of every kind a visitor asks — counts, what a building was, who is
    buried, whose statue — in every tour language). The eval set's 50 were too few: the tuned model
    declined or misanswered the kinds it had not seen ("How many steps to the dome?").
    The base's answers are kept in `cache` when given (keyed by `model_key` — the base's sha256 —,
    the questions and their prompts). With `quotes=False` a question the base gets wrong is left out
    (run 8: 47 quoted targets taught the model to quote a sentence, sometimes the wrong one).
    """
    from .answer import _CITATION
    from .dialogue import DialogueState
    from .evaluate import rescore
    from .ftdata import cite, reference_answer
    from .pipeline import prepare_prompt

    sources = {}
    for file, source in (("eval.yaml", f"eval:{tour.id}"), ("train.yaml", f"train:{tour.id}")):
        for q in written_questions(tour, attractions, file):
            if not q.history and q.lang in DONT_KNOW:
                sources.setdefault(q.id, (q, source))
    questions = [q for q, _ in sources.values()]
    prompts = {q.id: prepare_prompt(guide, DialogueState(tour=tour.id), q.question, tour, example=False)
               for q in questions}
    # a question that names no attraction the guide recognises is searched over the whole tour, and
    # may retrieve passages of held-out attractions: those examples are left out (no leak)
    leaky = {i for i, p in prompts.items() if any(h.passage.attraction not in attractions for h in p.hits)}
    questions = [q for q in questions if q.id not in leaky]
    answerable = [q for q in questions if q.type != "unanswerable"]

    def answer(qs):
        return {r["id"]: r for r in eval_with_llm(guide, tour.id, llm, qs, progress)["rows"]} if qs else {}

    if cache is not None and model_key:
        # the answers depend on the model and the prompt only: each is kept under a hash of both, so
        # a new question asks the model that question alone; they are scored again at every use, so
        # a changed expectation or language rule does not ask the model again
        keys = {q.id: _digest([model_key, q.id, q.question, prompts[q.id].messages]) for q in answerable}
        cached = json.loads(cache.read_text()).get("answers", {}) if cache.is_file() else {}
        rows = {q.id: cached[keys[q.id]] for q in answerable if keys[q.id] in cached}
        missing = [q for q in answerable if q.id not in rows]
        if missing:
            log.info("the base answers %d written questions (%d reused from %s)", len(missing), len(rows), cache)
            new = answer(missing)
            rows.update(new)
            _atomic_write(cache, json.dumps({"answers": {**cached, **{keys[i]: r for i, r in new.items()}}},
                                            ensure_ascii=False))
        rescore({"rows": list(rows.values())}, tour, answerable)
    else:
        rows = answer(answerable)
    out, kept, quoted, written = [], 0, 0, 0
    for q in questions:
        prepared = prompts[q.id]
        if q.type == "unanswerable":
            target = DONT_KNOW[q.lang]
        else:
            r = rows[q.id]
            quote = reference_answer(prepared.hits, q.lang, list(q.expect), max_chars=200)
            right = (r.get("fact_ok") and r["answer_lang"] in (None, q.lang) and len(r["answer"]) <= 200
                     and not r["answer"].startswith("["))
            if right and r.get("citation_ok"):
                target, kept = r["answer"], kept + 1
            elif right and quote and not _CITATION.search(r["answer"]):
                # right but uncited: the source of the sentence that states it is added
                target, kept = cite(r["answer"], int(_CITATION.findall(quote)[-1])), kept + 1
            elif q.answer and (source := fact_source(prepared.hits, q.lang, q.expect)):
                # the base got it wrong: the answer written with the question, cited with the source that
                # states the fact (a question whose prompt holds no such source is left out)
                target, written = cite(q.answer, source), written + 1
            elif quote and quotes:  # the base got it wrong: the shortest source sentence in the visitor's language
                target, quoted = quote, quoted + 1
            else:
                continue
        out.append(Example(id=f"{tour.id}/written/{q.id}", source=sources[q.id][1], kind="written", lang=q.lang,
                           attraction=q.attractions[0], messages=prepared.messages + [
                               {"role": "assistant", "content": target}], question=q.question,
                           expect=list(q.expect)))
    stats = {"questions": len(questions), "answerable": len(answerable), "base_answers": kept,
             "written_answers": written, "quoted": quoted, "unanswerable": len(questions) - len(answerable),
             "from_train_yaml": sum(sources[q.id][1] == f"train:{tour.id}" for q in questions),
             "left_out_held_out_sources": len(leaky)}
    log.info("written questions of training attractions: %s", stats)
    return out, stats


def _refuses(e: Example) -> bool:
    """Whether the example's target is "I don't know" (by the target: written ones are kind "written")."""
    return e.messages[-1]["content"] in DONT_KNOW.values()


def cap_refusals(written: list[Example], generated: list[Example], share: float | None,
                 total: int | None) -> list[Example]:
    """Generated "I don't know" examples dropped so refusals are at most `share` of the training set.

    The base never refuses (refusal rate 0), so a few refusal targets already teach it; in runs 1-5
    a fifth of the targets were refusals and the tuned model declined answerable questions too
    (false refusals up to 0.14). The written unanswerable questions stay; generated ones go first.
    """
    if share is None:
        return generated
    size = total if total is not None else len(written) + len(generated)
    # (until run 15 the written refusals were counted by kind, which is "written": none counted, so
    # the offline preset's 10 % was 11 % — 21 of 192 — and any smaller share changed nothing)
    room = max(0, int(share * size) - sum(_refuses(e) for e in written))
    out, kept = [], 0
    for e in generated:
        if _refuses(e):
            if kept >= room:
                continue
            kept += 1
        out.append(e)
    return out


def _asks_person(e: Example) -> bool:
    """Whether the question asks for a person: "who designed it?" or "who is the director?"."""
    from .ftdata import ASK
    from .grounding import asked_concepts

    if any(c.name == "person in office" for c in asked_concepts(e.question)):
        return True
    return any(re.fullmatch(re.escape(t).replace(re.escape("{name}"), ".+"), e.question)
               for t in ASK["architect"].get(e.lang, []))


def pair_refusals(written: list[Example], generated: list[Example], pool: list[Example]) -> list[Example]:
    """Each "I don't know" target beside an answered question on the same attraction, in the same language.

    Runs 14 and 16-18 each declined one or two answerable held-out questions, most of them "who?"
    questions ("who is buried there?", "who had the Arc built?"), while the refusal targets include
    "who is the current director of ...?". A refusal with a twin that the sources do answer, of the
    same form where it asks for a person ("who designed ...?"), shows that what decides is whether
    the sources state it, not the form of the question or the attraction. A twin is a generated
    factual example from `pool` (the generated examples before subsampling); it takes the place of a
    generated example of the most crowded kind and language that is not a twin itself.
    """
    chosen = list(generated)
    ids = {e.id for e in chosen}

    def twin_of(r, e):  # an answered factual question on r's attraction, in its language (and form)
        return (e.kind == "factual" and e.attraction == r.attraction and e.lang == r.lang and not _refuses(e)
                and (_asks_person(e) or not _asks_person(r)))

    added = 0
    for r in [e for e in written + generated if _refuses(e) and e.attraction]:
        if any(twin_of(r, e) for e in chosen):
            continue
        twins = [e for e in pool if e.id not in ids and twin_of(r, e)]
        if not twins:
            continue
        counts: dict[tuple, int] = {}
        for e in chosen:
            if not _refuses(e):
                counts[(e.kind, e.lang)] = counts.get((e.kind, e.lang), 0) + 1
        protected = {(e.attraction, e.lang) for e in written + chosen if _refuses(e)}  # keeps the twins
        crowded = [e for e in chosen if not _refuses(e) and counts[(e.kind, e.lang)] == max(counts.values())
                   and not (e.kind == "factual" and (e.attraction, e.lang) in protected)]
        if crowded:  # (when the most crowded group holds only twins, the twin is added: run 19, 4 of 13)
            chosen.remove(crowded[-1])
        chosen.append(twins[0])
        ids.add(twins[0].id)
        added += 1
    log.info("refusal targets paired with answered questions: %d twins added", added)
    return chosen


def distil(llm, rows: list[Example], tour, *, max_tokens: int = 96, progress: bool = True) -> tuple[list[Example], dict]:
    """The base's own answer as the target of a generated example, where that answer is right.

    Training on composed sentences alone moved the model away from how it answers everything else
    (measured in runs 3-5: "Who had the Arc built?" answered with the architect, "since when is the
    Louvre a museum?" with the year building began). Where the base, given the training prompt,
    already answers with the expected fact in a sentence in the visitor's language, with no number
    the prompt lacks and no refusal, its answer is the target (self-distillation); where not, the
    composed answer stays. Measured (run 6): the base gets most facts right on these prompts but
    cites no source, so an answer without a citation is kept with the source the composed answer
    cites (the passage that states the fact) added; one with citations must cite that source. The
    examples that change the model are then the ones where the base was wrong, plus citations.
    """
    from .answer import _CITATION, _numbers, is_refusal
    from .evaluate import answer_language, contains_fact
    from .ftdata import cite

    out, stats = [], {"asked": 0, "kept": 0, "cited": 0}
    for e in tqdm(rows, desc="base answers (distillation)", unit="example", disable=not progress):
        target = e.messages[-1]["content"]
        if not e.expect or e.source != f"tour:{tour.id}" or e.kind not in ("factual", "followup", "switch"):
            out.append(e)
            continue
        stats["asked"] += 1
        prompt = e.messages[:-1]
        answer = " ".join("".join(llm.stream(prompt, max_tokens=max_tokens, temperature=0.0)).split())
        n_sources = len(re.findall(r"^\[(\d+)\] ", prompt[-1]["content"], flags=re.M))
        cited = {int(n) for n in _CITATION.findall(answer)}
        wanted = {int(n) for n in _CITATION.findall(target)}
        known = _numbers(" ".join(m["content"] for m in prompt))
        right = (answer and len(answer) <= 200 and not answer.startswith("[") and not is_refusal(answer)
                 and contains_fact(answer, tuple(e.expect)) and answer_language(answer, tour) == e.lang
                 and _numbers(_CITATION.sub(" ", answer)) <= known and len(wanted) == 1)
        if right and not cited:
            answer, cited = cite(answer, next(iter(wanted))), wanted
            stats["cited"] += 1
        if right and wanted <= cited and all(1 <= n <= n_sources for n in cited):
            stats["kept"] += 1
            e = dataclasses.replace(e, messages=prompt + [{"role": "assistant", "content": answer}])
        out.append(e)
    log.info("generated examples answered by the base: %s", stats)
    return out, stats


def eval_with_llm(guide, tour_id: str, llm, questions, progress: bool, guards: bool | None = None) -> dict:
    """The eval harness with another LLM over the already loaded tours, indexes and embedder
    (`guards`: the answer guards on or off; None keeps the guide's setting)."""
    from .evaluate import evaluate_tour
    from .pipeline import Guide

    config = guide.config if guards is None else guide.config.replace(answer_guards=guards)
    with_llm = Guide(config, guide.tours, guide.indexes, guide.embedder, llm, guide.problems)
    return evaluate_tour(with_llm, tour_id, questions=questions, progress=progress)


def serving_code_hash() -> str:
    """sha256 of the guide's serving code (all of guide/ but the fine-tuning modules): what decides
    how the guide answers, guards included, for a given model."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name not in ("finetune.py", "ftdata.py", "cli.py"):
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


def _summary_line(summary: dict) -> str:
    keys = ("fact_accuracy", "followup_accuracy", "language_match", "refusals", "false_refusals", "citation_validity")
    return ", ".join(f"{k} {summary.get(k)}" for k in keys)


def _digest(key) -> str:
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def fact_source(hits, lang: str, expect) -> int | None:
    """The number of the first source that states one of `expect`, one in the visitor's language first."""
    from .evaluate import contains_fact

    found = [(h.passage.lang != lang, i) for i, h in enumerate(hits, 1) if contains_fact(h.passage.text, tuple(expect))]
    return min(found)[1] if found else None


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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


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
