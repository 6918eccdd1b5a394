"""The guide as served (guards on) on the written eval questions of attractions no training example
is about, with the base and with an adapter: `python scripts/heldout-eval.py RUN_DIR`.

The fine-tuning report scores the model with the guards off; this is what a visitor would get.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide.config import load_config  # noqa: E402
from guide.evaluate import evaluate_tour, format_report  # noqa: E402
from guide.finetune import written_questions  # noqa: E402
from guide.pipeline import Guide  # noqa: E402


def main(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    tour_id = report["config"]["tour"]
    held_out = report["split"]["test"] + report["split"]["dev"]
    results = {}
    for adapter in ("none", str(run_dir / "adapter")):
        guide = Guide.load(load_config().replace(adapter=adapter), tours=[tour_id], progress=False)
        questions = written_questions(guide.tour(tour_id), held_out)
        results[adapter] = evaluate_tour(guide, tour_id, questions=questions, progress=True)
        print(f"\n## adapter: {adapter} ({len(questions)} written questions on {', '.join(held_out)})\n")
        print(format_report(results[adapter]))
    (run_dir / "heldout-served.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
