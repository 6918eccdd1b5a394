"""The answer model in a process of its own: a loopback OpenAI-compatible server, and its supervisor.

llama.cpp is native code: a bad kernel for the CPU (an AMX weight repack, an AVX-512 build on a
machine without it) ends the process with a signal, not an exception. Run in the web server, one
such crash ends the service for every visitor. So the guide runs the GGUF model in a child process
(`python -m guide.llm_server`), talks to it over loopback with the same OpenAI-compatible protocol
it uses for vLLM or a llama.cpp server farm, and supervises it: a child that dies costs the answer
in progress (the visitor is told, in their language, to ask again) and is started again for the
next visitor.

At start the supervisor decodes a few tokens (the self-check). If the child crashes doing so, it
tries once more without llama.cpp's weight repacking ("extra buffers": the AMX / AVX-512 repack
paths), and reports which settings it serves with; `python -m guide doctor` shows the same.
The child's store of fixed prompt starts is in prefix_store.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .errors import GuideError, ModelUnavailable
from .prefix_store import PrefixStore, fixed_messages

__all__ = ["LLMCrashed", "LlamaServer", "SupervisedLLM"]

log = logging.getLogger(__name__)

SELF_CHECK = [{"role": "user", "content": "Say OK."}]


class LLMCrashed(GuideError):
    """The answer model's process died during a request; it is being restarted."""


# --- the child: one Llama behind /v1/chat/completions ---------------------------------------------------


def _no_repack() -> None:
    """Make every model this process loads skip llama.cpp's extra (repacked-weight) buffers.

    What llama.cpp's `--no-repack` does; llama-cpp-python has no argument for it, so the default
    model parameters it starts from are changed.
    """
    import llama_cpp

    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    llama_cpp.llama_model_default_params = params
    import llama_cpp.llama as llama_module

    llama_module.llama_cpp.llama_model_default_params = params


def system_info() -> str:
    """llama.cpp's own report of the CPU features it was built with and found (AVX2 = 1 | AVX512 = 0 ...)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


class _Handler(BaseHTTPRequestHandler):
    server_version = "tourguide-llm/1"
    llm = None  # set on the class by serve()
    prefixes: PrefixStore | None = None
    lock = threading.Lock()  # one llama.cpp context: one generation at a time, the others wait
    info: dict = {}

    def log_message(self, fmt, *args):  # noqa: D102 - quiet: the supervisor logs what matters
        log.debug(fmt, *args)

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path in ("/health", "/v1/models"):
            store = self.prefixes
            stats = {"prefix_store": {"kept": len(store.states), "hits": store.hits, "misses": store.misses}
                     if store is not None else None}
            self._json(200, {"status": "ok", "data": [{"id": self.info.get("name", "default")}], **self.info, **stats})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": "not found"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            messages = body["messages"]
        except (ValueError, KeyError) as e:
            self._json(400, {"error": f"bad request: {e}"})
            return
        kwargs = dict(messages=messages, max_tokens=int(body.get("max_tokens") or 200),
                      temperature=float(body.get("temperature") or 0.0), stop=body.get("stop"),
                      seed=int(body.get("seed") or 0))
        with self.lock:
            if self.prefixes is not None:
                self.prefixes.n_fixed = fixed_messages(messages)
            if not body.get("stream"):
                out = self.llm.create_chat_completion(**kwargs)
                self._json(200, out)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                for chunk in self.llm.create_chat_completion(stream=True, **kwargs):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                log.info("the client went away mid-answer")


def serve(argv: list[str] | None = None) -> None:
    """Child entry point: load the GGUF model, print one JSON line with the port, serve until killed."""
    ap = argparse.ArgumentParser(prog="python -m guide.llm_server", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--lora")
    ap.add_argument("--name", default="default")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--no-repack", action="store_true", help="skip llama.cpp's repacked-weight buffers")
    ap.add_argument("--no-prefix-store", action="store_true",
                    help="do not keep the KV state of each fixed prompt start (PrefixStore)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (printed on stdout)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s llm-server: %(message)s", stream=sys.stderr)
    _exit_with_parent()
    from .config import usable_cores

    if args.no_repack:
        _no_repack()
    from llama_cpp import Llama

    n = args.threads or usable_cores()
    kwargs = dict(model_path=args.model, n_ctx=args.n_ctx, n_threads=n, n_threads_batch=n,
                  n_gpu_layers=args.gpu_layers, verbose=False, seed=0)
    if args.lora:
        kwargs["lora_path"] = args.lora
    _Handler.llm = Llama(**kwargs)
    if not args.no_prefix_store:
        _Handler.prefixes = PrefixStore(_Handler.llm)
        _Handler.prefixes.install()
    _Handler.info = {"name": args.name, "pid": os.getpid(), "repack": not args.no_repack,
                     "system_info": system_info(), "threads": n}
    httpd = ThreadingHTTPServer((args.host, args.port), _Handler)
    httpd.daemon_threads = True
    print(json.dumps({"port": httpd.server_address[1], **_Handler.info}), flush=True)
    httpd.serve_forever()


def _exit_with_parent() -> None:
    """Exit when the process that started this one is gone (no orphaned model servers).

    Not PR_SET_PDEATHSIG: Linux sends that when the *thread* that forked the child exits, and the
    supervisor restarts a crashed child from a short-lived thread.
    """
    parent = os.getppid()

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(1.0)

    if parent == 1:  # the parent died before this process started watching
        sys.exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# --- the parent: start, check, restart ------------------------------------------------------------------


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class LlamaServer:
    """One supervised `guide.llm_server` child on loopback for a GGUF model (and LoRA)."""

    def __init__(self, model: str | Path, *, lora: str | Path | None = None, name: str = "default",
                 n_ctx: int = 2048, threads: int = 0, gpu_layers: int = 0, repack: bool = True,
                 log_path: Path | None = None, start_timeout: float = 180.0, prefix_store: bool = True):
        self.model, self.lora, self.name = str(model), str(lora) if lora else None, name
        self.prefix_store = prefix_store
        self.n_ctx, self.threads, self.gpu_layers, self.repack = n_ctx, threads, gpu_layers, repack
        self.log_path, self.start_timeout = log_path, start_timeout
        self._proc: list[subprocess.Popen | None] = [None]  # shared with the finalizer, which must not hold self
        self.port: int | None = None
        self.info: dict = {}
        self.restarts = 0
        self.last_exit: str | None = None
        self._lock = threading.Lock()
        weakref.finalize(self, _kill, self._proc)  # no model server outlives its owner

    @property
    def proc(self) -> subprocess.Popen | None:
        return self._proc[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "guide.llm_server", "--model", self.model, "--name", self.name,
               "--n-ctx", str(self.n_ctx), "--threads", str(self.threads), "--gpu-layers", str(self.gpu_layers)]
        if self.lora:
            cmd += ["--lora", self.lora]
        if not self.repack:
            cmd.append("--no-repack")
        if not self.prefix_store:
            cmd.append("--no-prefix-store")
        return cmd

    def start(self) -> None:
        """Start the child and wait until it has loaded the model and listens (raises ModelUnavailable)."""
        with self._lock:
            if self.alive():
                return
            err = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
            self._proc[0] = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
            if err is not subprocess.DEVNULL:
                err.close()
            line = _read_line(self.proc, self.start_timeout)
            if not line:
                try:
                    code = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    code = None
                _kill(self._proc)
                self.last_exit = _describe_exit(code) if code is not None else "no answer at start"
                raise ModelUnavailable(f"the answer model's process did not start ({self.last_exit}; "
                                       f"log: {self.log_path or 'none'})")
            self.info = json.loads(line)
            self.port = int(self.info["port"])
            log.info("LLM server pid %d on %s (repack %s)", self.proc.pid, self.url, "on" if self.repack else "off")

    def check(self, timeout: float = 120.0) -> str:
        """Decode a few tokens (the self-check); returns the text, raises LLMCrashed if the child died."""
        import httpx

        body = {"messages": SELF_CHECK, "max_tokens": 4, "temperature": 0.0, "seed": 0}
        try:
            r = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=timeout)
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, ValueError) as e:
            time.sleep(0.2)
            raise LLMCrashed(f"the answer model failed its self-check ({self.exit_reason() or e})") from e

    def exit_reason(self) -> str | None:
        """How the child ended ('killed by SIGSEGV'), None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        self.last_exit = _describe_exit(self.proc.returncode)
        return self.last_exit

    def restart(self) -> None:
        self.restarts += 1
        self.stop()
        self.start()

    def stop(self) -> None:
        _kill(self._proc)


def _kill(holder: list) -> None:
    """Stop the child in holder[0], politely first."""
    proc = holder[0]
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc is not None and proc.stdout:
        proc.stdout.close()


def _read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    """The child's first stdout line, or None if it exits or stays silent for `timeout` seconds."""
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = out[0].decode().strip() if out else ""
    return line or None


class SupervisedLLM:
    """The LLM protocol over a supervised `LlamaServer`: same answers as in-process llama.cpp, crash-isolated."""

    can_judge = True

    def __init__(self, server: LlamaServer, *, name: str, tokenizer=None, restart_limit: int = 5,
                 restart_window_s: float = 300.0, request_timeout: float = 300.0):
        from .answer import OpenAICompatibleLLM

        self.server, self.name = server, name
        self._tokenizer = tokenizer  # a vocab-only Llama: counts tokens in-process, no weights, no kernels
        self._client = OpenAICompatibleLLM(server.url, model=name, timeout=request_timeout)
        self.restart_limit, self.restart_window_s = restart_limit, restart_window_s
        self._restarts: list[float] = []
        self._lock = threading.Lock()

    @classmethod
    def start(cls, model: str | Path, *, lora: str | Path | None = None, name: str, n_ctx: int = 2048,
              threads: int = 0, gpu_layers: int = 0, log_path: Path | None = None) -> SupervisedLLM:
        """Start the child, self-check it, and fall back to no repacking if the first decode crashes."""
        tried = []
        for repack in (True, False):
            server = LlamaServer(model, lora=lora, name=name, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers,
                                 repack=repack, log_path=log_path)
            try:
                server.start()
                server.check()
            except GuideError as e:
                tried.append(f"repack {'on' if repack else 'off'}: {e}")
                log.error("LLM self-check failed with repack %s: %s", "on" if repack else "off", e)
                server.stop()
                continue
            llm = cls(server, name=name, tokenizer=_vocab_only(model))
            llm.self_check = ("ok" if repack else
                              "the first decode crashed with llama.cpp's weight repacking; serving without it ("
                              + "; ".join(tried) + ")")
            return llm
        raise ModelUnavailable("the answer model crashes on this machine: " + "; ".join(tried))

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server.proc else None

    def _ensure(self) -> None:
        with self._lock:
            if self.server.alive():
                return
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < self.restart_window_s]
            if len(self._restarts) >= self.restart_limit:
                raise GuideError(f"the answer model crashed {len(self._restarts)} times in "
                                 f"{self.restart_window_s:.0f} s and is not restarted again ({self.server.last_exit})")
            self._restarts.append(now)
            log.warning("LLM server is down (%s); restarting it", self.server.exit_reason())
            self.server.restart()
            self._client = type(self._client)(self.server.url, model=self.name, timeout=self._client._client.timeout)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str]:
        self._ensure()
        client = self._client
        try:
            yield from client.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
        except GuideError as e:
            time.sleep(0.2)  # the child's exit status arrives a moment after its socket closes
            reason = self.server.exit_reason()
            if reason is None:
                raise
            log.error("LLM server died mid-answer (%s); it will be restarted for the next question", reason)
            threading.Thread(target=self._restart_quietly, daemon=True).start()
            raise LLMCrashed(f"the answer model stopped ({reason}); it is being restarted") from e

    def _restart_quietly(self) -> None:
        try:
            self._ensure()
        except GuideError as e:
            log.error("LLM server restart failed: %s", e)

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return max(1, len(text) // 3)
        return len(self._tokenizer.tokenize(text.encode("utf-8"), add_bos=False))

    def close(self) -> None:
        self.server.stop()


def _vocab_only(model: str | Path):
    try:
        from llama_cpp import Llama

        return Llama(model_path=str(model), vocab_only=True, verbose=False)
    except Exception:  # noqa: BLE001 - counting falls back to an estimate
        log.warning("no in-process tokenizer for %s; estimating token counts", model, exc_info=True)
        return None


if __name__ == "__main__":
    serve()
