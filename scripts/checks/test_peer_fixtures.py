"""The built peer fixtures (Tests/Fixtures/peers) are exactly what their committed generator writes,
CC-Neg going through scripts/converters/ccneg_pt_to_json.py from a real torch.save'd file."""
import filecmp
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "Tests", "Fixtures", "peers")
BUILT = ["negbench_mcq.csv", "negbench_retrieval.csv", "negationclip_coco.json", "ccneg_conclip.json"]


def test_built_fixtures_match_their_generator(tmp_path):
    subprocess.run([sys.executable, os.path.join(PEERS, "make_built_fixtures.py")], cwd=tmp_path, check=True)
    have_torch = importlib.util.find_spec("torch") is not None
    for name in BUILT:
        if name == "ccneg_conclip.json" and not have_torch:
            print("SKIPPED ccneg_conclip.json: torch is not installed")
            continue
        assert filecmp.cmp(tmp_path / name, os.path.join(PEERS, name), shallow=False), \
            f"{name} differs from what make_built_fixtures.py writes; rerun it in {PEERS}"


def test_converter_refuses_mismatched_lengths(tmp_path):
    torch = pytest.importorskip("torch")
    pt = tmp_path / "bad.pt"
    torch.save({"image_paths": ["a.jpg", "b.jpg"], "annotations": [{"json": {"caption": "x"}, "sop_data": {"negative-prompt": "no x"}}]}, pt)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "converters", "ccneg_pt_to_json.py"), str(pt), str(tmp_path / "out.json")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "expected one annotation per image path (2), found 1" in r.stderr
    assert not (tmp_path / "out.json").exists()
