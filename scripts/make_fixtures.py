"""Regenerates every committed numeric fixture under Tests/Fixtures/ (run once by a developer; tests
never run Python). Pinned versions: torch 2.13.0 (CPU wheel) + scripts/requirements-fixtures.txt.

    python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -r scripts/requirements-fixtures.txt
    .venv/bin/python scripts/make_fixtures.py            # all
    .venv/bin/python scripts/make_fixtures.py model      # one part: tokenizer, tokenizer_json, images, safetensors, model

Each part lives in scripts/fixtures/<part>.py and records its generator version in what it writes;
a Swift test that finds a fixture out of date names the part to rerun.
"""
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Order matters: the model fixtures use the tiny vocabulary and the image files of earlier parts.
PARTS = ["tokenizer", "tokenizer_json", "images", "safetensors_fixtures", "model", "training"]
# Where each part writes (its main(out_dir) argument).
OUT = {"tokenizer": "Tests/Fixtures", "tokenizer_json": "Tests/Fixtures", "images": "Tests/Fixtures/images",
       "safetensors_fixtures": "Tests/Fixtures/safetensors", "model": "Tests/Fixtures",
       "training": "Tests/Fixtures/training"}


def main(argv):
    sys.path.insert(0, os.path.join(HERE, "fixtures"))
    wanted = argv or PARTS
    for part in wanted:
        name = "safetensors_fixtures" if part == "safetensors" else part
        if name not in PARTS:
            sys.exit(f"make_fixtures: unknown part {part!r}; parts: {', '.join(PARTS)}")
        print(f"make_fixtures: {name}", file=sys.stderr)
        importlib.import_module(name).main(os.path.join(ROOT, OUT[name]))


if __name__ == "__main__":
    main(sys.argv[1:])
