"""scripts/converters/open_clip_bin_to_safetensors.py: a plain open_clip state-dict pickle converts to the
same tensors; a pickle carrying code is refused with one line naming the file, and its code never runs."""
import os
import pickle
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
from safetensors.torch import load_file  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONVERTER = os.path.join(ROOT, "scripts", "converters", "open_clip_bin_to_safetensors.py")
FIXTURE = os.path.join(ROOT, "Tests", "Fixtures", "tiny-open-clip", "open_clip_model.safetensors")


def run(*args):
    return subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)


def test_plain_state_dict_converts_to_the_same_tensors(tmp_path):
    state = load_file(FIXTURE)
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    r = run(str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = load_file(tmp_path / "open_clip_model.safetensors")
    assert set(out) == set(state)
    for k in state:
        assert torch.equal(out[k], state[k]), k


def test_training_checkpoint_with_module_prefix(tmp_path):
    state = {"module." + k: v for k, v in load_file(FIXTURE).items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "epoch_3.pt")
    r = run(str(tmp_path / "epoch_3.pt"), str(tmp_path / "out.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "transformer.resblocks.0.attn.in_proj_weight" in load_file(tmp_path / "out.safetensors")


class Payload:
    """A pickle whose loading would run a shell command (the attack a .bin can carry)."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 4"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    src = tmp_path / "open_clip_pytorch_model.bin"
    obj = {"token_embedding.weight": torch.zeros(2, 2), "x": Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, src)   # torch's zip format, the payload's GLOBAL posix.system in data.pkl
    else:
        with open(src, "wb") as f:
            pickle.dump(obj, f, protocol=4)
    r = run(str(tmp_path))
    assert r.returncode != 0
    msg = r.stderr.strip()
    assert "\n" not in msg and str(src) in msg and "refused" in msg, msg
    assert not marker.exists()
    assert not (tmp_path / "open_clip_model.safetensors").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]
