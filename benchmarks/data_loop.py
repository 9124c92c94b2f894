"""Fixing and growing the data (issue 24) on flowers17: label errors, what to label next, unlabelled photos.

    flock /tmp/tlearn-heavy.lock python -m benchmarks.data_loop --part labels|suggest|unlabelled|all

Each part lives in its own module, `benchmarks/data_loop_<part>.py`, with `add_arguments(parser)`,
`run(args) -> dict` (what goes into the JSON) and `print_table(result)`. Results are merged into
benchmarks/results/data_loop.json under one key per part, so running one part keeps the others'.
A part whose module does not exist yet is reported and skipped. Options of one part only are
named after it (`--labels-flip 0.05`), so the parts' options never clash; --data, --weights and
--seeds are shared.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PARTS = ("labels", "suggest", "unlabelled")
RESULTS = ROOT / "benchmarks" / "results" / "data_loop.json"


def _module(part: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"benchmarks.data_loop_{part}")
    except ModuleNotFoundError as err:
        if err.name != f"benchmarks.data_loop_{part}":
            raise
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "flowers17")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenetv2_100.tf_in1k.safetensors")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--json", type=Path, default=RESULTS)
    modules = {p: _module(p) for p in PARTS}
    for module in modules.values():
        if module is not None and hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args()
    parts = PARTS if args.part == "all" else (args.part,)

    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for part in parts:
        module = modules[part]
        if module is None:
            print(f"part {part}: not built yet (benchmarks/data_loop_{part}.py), skipped")
            continue
        result = module.run(args)
        module.print_table(result)
        results[part] = result
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")  # after each part: nothing lost
        print(f"wrote {args.json} ({part})\n")


if __name__ == "__main__":
    main()
