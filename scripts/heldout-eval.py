"""The guide as served (guards on) on the written eval questions of attractions no training example
is about, with the base and with an adapter: `python scripts/heldout-eval.py RUN_DIR`.

The fine-tuning report scores the model with the guards off; this is what a visitor would get.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide.answer import load_llm  # noqa: E402
from guide.config import load_config  # noqa: E402
from guide.evaluate import format_report  # noqa: E402
from guide.finetune import eval_with_llm, written_questions  # noqa: E402
from guide.pipeline import Guide  # noqa: E402


def main(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    tour_id = report["config"]["tour"]
    held_out = report["split"]["test"] + report["split"]["dev"]
    config = load_config().replace(adapter="none")
    guide = Guide.load(config, tours=[tour_id], progress=False)  # tours, indexes, embedder and the base: once
    questions = written_questions(guide.tour(tour_id), held_out)
    results = {}
    for adapter in ("none", str(run_dir / "adapter")):
        llm = guide.llm if adapter == "none" else load_llm(
            config.llm, cache_dir=config.cache_dir, n_ctx=config.llm_context, threads=config.threads,
            device=config.device, adapter=adapter)
        results[adapter] = eval_with_llm(guide, tour_id, llm, questions, progress=True)
        print(f"\n## adapter: {adapter} ({len(questions)} written questions on {', '.join(held_out)})\n")
        print(format_report(results[adapter]))
    (run_dir / "heldout-served.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
