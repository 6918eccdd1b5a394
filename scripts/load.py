#!/usr/bin/env python
"""Load test: the app on 127.0.0.1 and 1, 2, 4, 8 simulated visitors, each in its own session.

    .venv/bin/python scripts/load.py                       # levels 1,2,4,8, 60 s each (make load)
    GUIDE_PROFILE=tiny .venv/bin/python scripts/load.py --levels 1,2 --seconds 20   # a smoke run

Starts `python app.py --port P` on loopback (a free port) as a subprocess, with a temporary copy
of the tours (plus reference photos from the dev data), a temporary index folder and upload folder,
and waits until it serves. One visitor's round of turns (not counted) loads the models that load on
first use (speech recognition, photo recognition, voices). Then, per level, N visitors (threads, each with its own
`gradio_client.Client`, so its own session and conversation) take turns until the level's time is
up: a typed question about the visitor's own attraction, a follow-up that only says "it" ("How
tall is it?" / "When was it built?"), a photo (of its attraction where the dev data has one, else
of a landmark the tour lacks) and its follow-up, and a recording from the dev audio.

Every answer is checked against the visitor's own conversation: the attraction on the card and the
attraction of every source must be the one this visitor is talking about (a "subject violation"
otherwise; "cross-visitor" when it is another concurrent visitor's attraction), and the chat that
comes back must be exactly this visitor's messages. A table per level gives turns, errors,
violations, p50/p95 latency and the server's resident memory (the app and its child processes).

Bounded: loopback only, a time limit per level and per turn, a watchdog on the whole run; the
server is killed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guide.config import dev_data_dir  # noqa: E402
from guide.tours import load_tour  # noqa: E402

log = logging.getLogger("load")

# dev-data landmark folder -> attraction of the Paris tour (the only two the dev photos show)
REFERENCE_PHOTOS = {"eiffel-tower": "eiffel_tower", "sacre-coeur": "sacre_coeur_basilica"}
# landmarks the Paris tour does not have: a photo of one must not be taken for one of its attractions
OTHER_LANDMARKS = ("big_ben", "colosseum", "taj_mahal", "statue_of_liberty", "sydney_opera_house", "stonehenge",
                   "leaning_tower_of_pisa", "tower_bridge")
# visitors' attractions, in this order: those with dev photos first, then those with a height
PREFERRED = ("eiffel-tower", "sacre-coeur", "louvre", "notre-dame", "arc-de-triomphe", "pantheon",
             "centre-pompidou", "les-invalides", "tour-montparnasse", "place-de-la-concorde", "musee-dorsay",
             "palais-garnier", "sainte-chapelle", "jardin-du-luxembourg", "pont-neuf", "pere-lachaise")
SORRY = "something went wrong on my side"  # app.SORRY: an unexpected failure on the server
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".m4a", ".webm", ".opus")


# ----------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS, KiB) of a process and all its descendants; 0 once it is gone."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
        total += int(m.group(1)) if m else 0
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return total


class Server:
    """app.py in a subprocess (its own process group) on 127.0.0.1, on temporary copies of its data."""

    def __init__(self, *, workdir: Path, data: Path | None, startup_s: float, python: str = sys.executable):
        self.workdir, self.data, self.startup_s, self.python = workdir, data, startup_s, python
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = workdir / "app.log"
        self.tours = workdir / "tours"
        self.photos: dict[str, list[Path]] = {}  # attraction -> dev photos that are not reference photos

    def prepare(self) -> None:
        shutil.copytree(ROOT / "tours", self.tours, ignore=shutil.ignore_patterns("photos"))
        images = self.data / "images" if self.data else None
        if images and images.is_dir():
            for attraction, landmark in REFERENCE_PHOTOS.items():
                photos = sorted((images / landmark).glob("*.jpg"))
                if len(photos) < 2:
                    continue
                target = self.tours / "paris" / "photos" / attraction
                target.mkdir(parents=True, exist_ok=True)
                for photo in photos[1:]:  # the first photo of each landmark stays unseen: the visitor's
                    shutil.copy(photo, target / photo.name)
                self.photos[attraction] = photos[:1]
        if (ROOT / "indexes").is_dir():  # a head start; stale copies are rebuilt there, never in the project
            shutil.copytree(ROOT / "indexes", self.workdir / "indexes")

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
        env.pop("SPACE_ID", None)
        env.update(GUIDE_INDEX_DIR=str(self.workdir / "indexes"), GUIDE_TOURS_DIR=str(self.tours),
                   GUIDE_DEFAULT_TOUR="paris", GRADIO_TEMP_DIR=str(self.workdir / "gradio"),
                   GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([self.python, "app.py", "--host", "127.0.0.1", "--port", str(self.port)],
                                         cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer on {self.url} within {self.startup_s:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(1)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def rss_mib(self) -> float:
        return rss_kib(self.proc.pid) / 1024 if self.proc and self.proc.poll() is None else 0.0

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------------------------
# Visitors


@dataclass
class Result:
    visitor: int
    kind: str  # text | followup | photo | recording
    seconds: float
    error: str | None = None
    violation: str | None = None
    cross: bool = False  # the violation shows another concurrent visitor's attraction
    misrecognised: bool = False


@dataclass
class Plan:
    """What one visitor talks about, and the photos and recordings it has."""

    attraction: str
    name: str
    followups: list[str]
    photo: Path | None
    recordings: list[Path] = field(default_factory=list)


class Names:
    """The Paris tour's attractions by every name they have (to read cards and sources)."""

    def __init__(self, tour):
        self.tour = tour
        self.by_name = {n.casefold(): a.id for a in tour.attractions for n in a.all_names()}

    def attraction(self, name: str) -> str | None:
        return self.by_name.get(name.strip().casefold())

    def card(self, card: str) -> str | None:
        """The attraction a card shows: its first heading (### 📷 Name (97%) or ### Name)."""
        for line in (card or "").splitlines():
            m = re.match(r"###\s+(?:📷\s+)?(.+?)(?:\s+\(\d+%\))?\s*$", line)
            if m and "recognise" not in m.group(1):
                return self.attraction(m.group(1))
        return None

    def sources(self, md: str) -> list[str | None]:
        """The attraction of every source: lines like '**[1] Title** · _English, facts_'."""
        out = []
        for line in (md or "").splitlines():
            m = re.match(r"^\**\[\d+\]\s+(.+?)\**\s+·", line)
            if m:
                out.append(self.attraction(m.group(1)))
        return out


def make_plans(tour, n: int, data: Path | None, photos: dict[str, list[Path]]) -> list[Plan]:
    order = [a for a in PREFERRED if any(x.id == a for x in tour.attractions)]
    order += [a.id for a in tour.attractions if a.id not in order]
    others: list[Path] = []
    recordings: list[Path] = []
    if data and (data / "images").is_dir():
        for landmark in OTHER_LANDMARKS:
            others += sorted((data / "images" / landmark).glob("*.jpg"))[:1]
    if data and (data / "audio").is_dir():
        for lang in tour.languages:
            folder = data / "audio" / lang
            if folder.is_dir():
                recordings += sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    plans = []
    for i in range(n):
        a = tour.attraction(order[i % len(order)])
        followups = (["How tall is it?"] if "height" in a.facts else []) + ["When was it built?"]
        own = photos.get(a.id) or []
        photo = own[0] if own else (others[i % len(others)] if others else None)
        mine = recordings[i::n] or recordings  # each visitor its own clips where there are enough
        plans.append(Plan(a.id, a.name("en"), followups, photo, mine))
    return plans


def text_of(content) -> str:
    """A chat message's text: Gradio sends a string, or a list of parts like {"type": "text", "text": ...}."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return " ".join(text_of(part) for part in content)
    return "" if content is None else str(content)


class Visitor:
    """One visitor: its own gradio_client session, chat and subject; loops over its turns until `until`."""

    def __init__(self, number: int, plan: Plan, url: str, names: Names, shared: dict[int, str | None],
                 turn_timeout: float, speak: bool, api_name: str, outputs: dict[str, int]):
        self.number, self.plan, self.url, self.names, self.outputs = number, plan, url, names, outputs
        self.shared = shared  # visitor -> the attraction it is talking about now (for cross-visitor checks)
        self.turn_timeout, self.speak, self.api_name = turn_timeout, speak, api_name
        self.results: list[Result] = []
        self.chat: list = []
        self.sent: list[str] = []  # the user messages this visitor sent, as the chat should show them

    def cycle(self, i: int = 0):
        """One round of turns: (kind, text, image, audio, what the subject is after the turn)."""
        p = self.plan
        yield "text", f"Tell me about the {p.name}.", None, None, p.attraction
        yield "followup", p.followups[i % len(p.followups)], None, None, p.attraction
        if p.photo is not None:
            yield "photo", "", p.photo, None, "photo"
            yield "followup", p.followups[(i + 1) % len(p.followups)], None, None, None
        if p.recordings:
            yield "recording", "", None, p.recordings[i % len(p.recordings)], "any"

    def turns(self):
        i = 0
        while True:
            yield from self.cycle(i)
            i += 1

    def run(self, until: float, turns: int | None = None) -> None:
        """Take turns until `until` (time.monotonic()), or exactly `turns` turns when given."""
        from gradio_client import Client, handle_file

        try:
            client = Client(self.url, verbose=False, download_files=False)
        except Exception as e:  # counted, not fatal: the other visitors carry on
            self.results.append(Result(self.number, "connect", 0.0, error=f"{type(e).__name__}: {e}"))
            return
        expected = self.plan.attraction
        self.shared[self.number] = expected
        try:
            for kind, text, image, audio, after in self.turns():
                if (len(self.results) >= turns) if turns is not None else time.monotonic() >= until:
                    break
                args = (text, handle_file(str(image)) if image else None, handle_file(str(audio)) if audio else None,
                        "paris", "auto", self.speak, self.chat)
                t0 = time.perf_counter()
                job = client.submit(*args, api_name=self.api_name)
                try:
                    out = job.result(timeout=self.turn_timeout)
                except Exception as e:
                    job.cancel()
                    self.results.append(Result(self.number, kind, time.perf_counter() - t0,
                                               error=f"{type(e).__name__}: {str(e)[:200]}"))
                    self.shared[self.number] = expected = None  # this conversation is in an unknown state
                    self.chat = []  # start over, as a visitor would after an error
                    self.sent = []
                    continue
                r = Result(self.number, kind, time.perf_counter() - t0)
                expected = self.check(r, out, kind, text, image, expected, after)
                self.shared[self.number] = expected
                self.results.append(r)
        finally:
            self.shared[self.number] = None
            try:
                client.close()
            except Exception:  # older gradio_client without close(), or a connection already gone
                pass

    def check(self, r: Result, out, kind: str, text: str, image, expected: str | None, after) -> str | None:
        """Record errors and violations of one turn; returns the subject the conversation has now."""
        chat, sources, card, notice = (out[self.outputs[k]] for k in ("chat", "sources", "card", "notice"))
        notice = notice if isinstance(notice, str) else ""
        self.chat = chat
        answer = text_of(chat[-1].get("content")) if chat and isinstance(chat[-1], dict) else ""
        if SORRY in answer or SORRY in (notice or ""):
            r.error = "server: " + answer[:200]
        # the chat that comes back is this visitor's own, message by message
        users = [text_of(m.get("content")) for m in chat if isinstance(m, dict) and m.get("role") == "user"]
        self.sent.append(text.strip() or None)
        if len(users) != len(self.sent) or any(s is not None and s not in u for s, u in zip(self.sent, users)):
            r.violation = f"chat holds other messages: {users[-3:]!r}"
            self.sent = list(users)
        card_subject = self.names.card(card)
        source_subjects = [s for s in self.names.sources(sources) if s is not None]
        if after == "photo":
            if card_subject is not None and card_subject != self.plan.attraction and image is not None:
                r.misrecognised = True  # a recognition mistake, not another visitor's answer
            now = card_subject or expected
        elif after == "any":
            return None  # a recording about something else: the subject may move; the next turn sets it again
        else:
            now = after or expected
        if now is None:
            return None
        wrong = [s for s in [card_subject, *source_subjects] if s is not None and s != now]
        if wrong and r.violation is None and not r.misrecognised:
            others = {a for v, a in self.shared.items() if v != self.number and a}
            r.violation = f"expected {now}, got {sorted(set(wrong))}"
            r.cross = bool(set(wrong) & others)
        return now


# ----------------------------------------------------------------------------------------------
# Levels and the report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def run_level(server: Server, n: int, seconds: float, plans: list[Plan], names: Names, args) -> dict:
    shared: dict[int, str | None] = {}
    visitors = [Visitor(i, plans[i], server.url, names, shared, args.turn_timeout, args.speak, args.api_name,
                        args.outputs) for i in range(n)]
    rss_start = server.rss_mib()
    peak = [rss_start]
    stop = threading.Event()

    def sample():
        while not stop.wait(1.0):
            peak[0] = max(peak[0], server.rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=v.run, args=(until,), name=f"visitor-{v.number}", daemon=True)
               for v in visitors]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:  # a turn started before the deadline may finish after it, within its own timeout
        t.join(max(1.0, until - time.monotonic()) + args.turn_timeout + 30)
    stop.set()
    sampler.join(5)
    results = [r for v in visitors for r in v.results]
    ok = [r.seconds for r in results if r.error is None and r.kind != "connect"]
    kinds = Counter(r.kind for r in results)
    row = {
        "visitors": n,
        "seconds": round(time.monotonic() - t0, 1),
        "turns": sum(1 for r in results if r.kind != "connect"),
        "by_kind": dict(kinds),
        "errors": sum(1 for r in results if r.error),
        "violations": sum(1 for r in results if r.violation),
        "cross_visitor": sum(1 for r in results if r.cross),
        "misrecognised": sum(1 for r in results if r.misrecognised),
        "p50_s": round(percentile(ok, 0.5), 2),
        "p95_s": round(percentile(ok, 0.95), 2),
        "max_s": round(max(ok), 2) if ok else float("nan"),
        "rss_start_mib": round(rss_start),
        "rss_end_mib": round(server.rss_mib()),
        "rss_peak_mib": round(max(peak[0], server.rss_mib())),
        "stuck_visitors": sum(1 for t in threads if t.is_alive()),
        "error_samples": [f"visitor {r.visitor} {r.kind}: {r.error}" for r in results if r.error][:5],
        "violation_samples": [f"visitor {r.visitor} {r.kind}: {r.violation}" for r in results if r.violation][:5],
    }
    return row


COLUMNS = [("visitors", "visitors"), ("turns", "turns"), ("errors", "errors"), ("violations", "subject violations"),
           ("cross_visitor", "cross-visitor"), ("misrecognised", "photo misrecognised"), ("p50_s", "p50 s"),
           ("p95_s", "p95 s"), ("max_s", "max s"), ("rss_start_mib", "RSS start MiB"),
           ("rss_end_mib", "RSS end MiB"), ("rss_peak_mib", "RSS peak MiB")]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " | turns by kind |",
             "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(row["by_kind"].items()))
        lines.append("| " + " | ".join(str(row[k]) for k, _ in COLUMNS) + f" | {kinds} |")
    return "\n".join(lines)


def output_positions(returns: list[dict]) -> dict[str, int]:
    """Where chat, sources, card and notice are among the turn's outputs, from their component types.

    The app's outputs are [Chatbot, Markdown (sources), Markdown (card), ..., HTML (notice), ...]; reading
    them by type keeps working when the app adds an output (it did: the streamed speech).
    """
    kinds = [str(r.get("component", "")).lower() for r in returns]
    markdown = [i for i, k in enumerate(kinds) if k == "markdown"]
    try:
        return {"chat": kinds.index("chatbot"), "sources": markdown[0], "card": markdown[1],
                "notice": kinds.index("html")}
    except (ValueError, IndexError):
        raise RuntimeError(f"the turn's outputs are not what this script reads: {kinds}") from None


def discover_api(url: str, wanted: str) -> tuple[str, dict[str, int]]:
    """The api_name of the turn event (`wanted` if the app has it, else the first endpoint taking the turn's
    7 inputs) and where its outputs are."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    info = client.view_api(print_info=False, return_format="dict")
    endpoints = info.get("named_endpoints", {})
    name = wanted if wanted in endpoints else None
    if name is None:
        turn = [n for n, e in endpoints.items() if len(e.get("parameters", [])) == 7]
        if not turn:
            raise RuntimeError(f"the app has no turn endpoint ({wanted}); it has: {', '.join(endpoints) or 'none'}")
        name = turn[0]
        log.warning("no endpoint %s; using %s (the app's endpoints: %s)", wanted, name, ", ".join(endpoints))
    return name, output_positions(endpoints[name].get("returns", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8", help="visitors at each level (default 1,2,4,8)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds per level (default 60)")
    parser.add_argument("--turn-timeout", type=float, default=180, help="seconds one turn may take (default 180)")
    parser.add_argument("--startup-timeout", type=float, default=900,
                        help="seconds the app may take to load its models and indexes (default 900)")
    parser.add_argument("--data", type=Path, default=None, help="dev data folder (default: shared/data/dev)")
    parser.add_argument("--no-speak", dest="speak", action="store_false", help="answers without speech")
    parser.add_argument("--api-name", default="/respond", help="the turn event's api_name (default /respond)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (app.log) afterwards")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the one visitor's round of turns (not counted) that loads the models first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        parser.error("--levels needs positive numbers, e.g. 1,2,4,8")
    data = args.data or dev_data_dir()
    if not data.is_dir():
        print(f"no dev data at {data}: photo and recording turns are skipped (set GUIDE_DEV_DATA)")
        data = None
    else:
        if not (data / "images").is_dir():
            print(f"no dev photos in {data / 'images'}: photo turns are skipped")
        if not (data / "audio").is_dir():
            print(f"no dev recordings in {data / 'audio'}: recording turns are skipped")
    limit = (args.startup_timeout + 5 * args.turn_timeout  # start, warm-up
             + len(levels) * (args.seconds + args.turn_timeout + 60) + 120)
    workdir = Path(tempfile.mkdtemp(prefix="tourguide-load-"))
    server = Server(workdir=workdir, data=data, startup_s=args.startup_timeout)

    def watchdog():  # the whole run is bounded, even if a visitor or the server hangs
        print(f"load.py: time limit of {limit:.0f} s reached; stopping the server", file=sys.stderr, flush=True)
        server.stop()
        os._exit(3)

    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rows: list[dict] = []
    try:
        server.prepare()
        profile = os.environ.get("GUIDE_PROFILE", "offline")
        log.info("starting app.py (profile %s) on %s; log in %s", profile, server.url, server.log_path)
        t0 = time.monotonic()
        server.start()
        log.info("serving after %.0f s, RSS %.0f MiB", time.monotonic() - t0, server.rss_mib())
        api_name, args.outputs = discover_api(server.url, args.api_name)
        args.api_name = api_name
        tour = load_tour(server.tours / "paris")
        names = Names(tour)
        plans = make_plans(tour, max(levels), data, server.photos)
        if args.warmup:  # models that load on first use (speech, vision, voices) load here, not in level 1
            t0 = time.monotonic()
            warm = Visitor(-1, plans[0], server.url, names, {}, args.turn_timeout, args.speak, args.api_name,
                           args.outputs)
            warm.run(time.monotonic() + 1e-3, turns=len(list(warm.cycle())))
            bad = [r for r in warm.results if r.error or r.violation]
            log.info("warm-up: %d turns in %.0f s%s", len(warm.results), time.monotonic() - t0,
                     "".join(f"\n  {r.kind}: {r.error or r.violation}" for r in bad))
        for n in levels:
            log.info("level %d: %d visitor(s) for %.0f s", n, n, args.seconds)
            row = run_level(server, n, args.seconds, plans, names, args)
            rows.append(row)
            print(f"\n{n} visitor(s), {row['seconds']} s:", flush=True)
            print(table([row]), flush=True)
            for line in row["error_samples"] + row["violation_samples"]:
                print(f"  {line}", flush=True)
            if server.proc.poll() is not None:
                print(f"the app exited with {server.proc.returncode}:\n{server.log_tail()}")
                break
        print(f"\nall levels (profile {profile}, api {api_name}, {args.seconds:.0f} s per level, "
              f"speech {'on' if args.speak else 'off'}):")
        print(table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    except KeyboardInterrupt:
        print("interrupted; stopping the server", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"load.py: {e}", file=sys.stderr)
        return 1
    finally:
        timer.cancel()
        server.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    bad = any(r["errors"] or r["violations"] or r["stuck_visitors"] for r in rows)
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
