"""scripts/peers/omni_negclip_torch.py (PyTorch, DDP under torchrun) against `negclip train`.

On a tiny synthetic world (`negclip make-world --size 12`: 10 train items with presence and absence
rewrites) from Tests/Fixtures/tiny-clip, with a layers.json made by `negclip select-layers` (block.1, the
sweep's best measured block, plus the released extras embeddings, final_ln, projection, logit_scale; blocks 0 and 2 frozen):
- `torchrun --nproc_per_node 2` (gloo, global batch 4 = 2 per process, 10 steps = 5 epochs of the
  seeded order, gradient clipping active) gives negclip train's loss and every loss part at each step
  within 1e-4 relative, and the same parameters after them within 1e-5 (every tensor of both
  checkpoints); frozen tensors are bit-identical to the base; `negclip evaluate` reads the checkpoint.
- the same run in one process equals the 2-process run (losses 1e-5 relative, parameters 1e-5).
- the other losses (conclip, clip, negationclip) and the shifted hinge with other weights: 3 steps,
  same checks against negclip train; likewise from a base whose logit_scale (-0.5) the clamp must lift.
- bad inputs stop with one line naming the file and key/line.
The 1-process runs call the script's main() in this process (one torch import); the DDP run is a
real `python -m torch.distributed.run` on a free port with a timeout.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from negclip_cli import negclip_binary

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch", reason="SKIPPED: torch not installed; omni_negclip_torch.py not checked")
pytest.importorskip("transformers", reason="SKIPPED: transformers not installed; omni_negclip_torch.py not checked")
from safetensors.numpy import load_file  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "peers"))
import omni_negclip_torch  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "peers", "omni_negclip_torch.py")
TINY = os.path.join(ROOT, "Tests", "Fixtures", "tiny-clip")
# lr 1e-3: 10 steps move the trained tensors by ~6e-3 while the two implementations stay ~3e-6 apart
# (at lr 1e-2 Adam's normalisation lets float rounding grow past 1e-5 in 10 steps).
COMMON = ["--batch", "4", "--lr", "1e-3", "--warmup", "2", "--seed", "7", "--clip-grad", "1.0"]


def negclip(*args):
    r = subprocess.run([negclip_binary(), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"negclip {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_in_process(args):
    rc = omni_negclip_torch.main([*map(str, args)])
    assert rc == 0


def log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def checkpoint(run_dir, steps):
    return load_file(os.path.join(run_dir, f"checkpoint-{steps}", "model.safetensors"))


def assert_same_losses(got, want, rtol, what):
    assert [r["step"] for r in got] == [r["step"] for r in want], what
    for g, w in zip(got, want):
        assert set(g["parts"]) == set(w["parts"]), (what, g["step"], sorted(g["parts"]), sorted(w["parts"]))
        for name, x, y in [("loss", g["loss"], w["loss"])] + [(k, g["parts"][k], w["parts"][k]) for k in w["parts"]]:
            assert abs(x - y) <= rtol * abs(y), f"{what}: step {w['step']} {name}: {x} vs {y} (relative {abs(x - y) / abs(y):.3g} > {rtol})"
        assert abs(g["lr"] - w["lr"]) <= 1e-12 * w["lr"], (what, g["step"], g["lr"], w["lr"])
        if "grad_norm" in w:
            assert abs(g["grad_norm"] - w["grad_norm"]) <= rtol * w["grad_norm"], (what, g["step"], g["grad_norm"], w["grad_norm"])


def zero_gradient(key):
    """Attention key biases: b_k adds q . b_k to every logit of a softmax row, so dL/db_k is exactly 0 in
    exact arithmetic; the computed gradient is rounding noise (~1e-9), which Adam's normalisation turns
    into updates of up to ~1e-3 lr per step. Such a tensor moves by noise only (not checked for movement)."""
    return key.endswith("self_attn.k_proj.bias")


def assert_same_tensors(got, want, atol, what):
    assert sorted(got) == sorted(want), f"{what}: key sets differ: {sorted(set(got) ^ set(want))}"
    worst = (0.0, "")
    for k in want:
        assert got[k].shape == want[k].shape, (what, k, got[k].shape, want[k].shape)
        d = float(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64)).max()) if want[k].size else 0.0
        worst = max(worst, (d, k))
    assert worst[0] <= atol, f"{what}: max|diff| {worst[0]:.3g} at {worst[1]} > {atol}"
    return worst[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("omni-torch")
    negclip("make-world", "--size", "12", "--image-size", "32", "--out", d / "world")
    import hashlib
    sha = hashlib.sha256(open(os.path.join(TINY, "model.safetensors"), "rb").read()).hexdigest()
    # a report.json in probe-layers' shape for the 3-block tower whose sweep measured block.1 best
    def est(m):
        return {"mean": m, "low": m - 0.01, "high": m + 0.01, "n": 2}

    def effect(k, gain):
        return {"unit": f"block.{k}", "blocks": [k], "learning_rate": 5e-4, "steps": 2, "seeds": [0, 1],
                "presence_gain": est(gain), "absence_gain": est(gain), "negation_gain": est(gain),
                "t2i_change": est(0.0), "i2t_change": est(0.0), "retrieval_drop": est(0.0)}
    sweep = {"base": {"presence": 0.5, "absence": 0.3, "retrieval_t2i": 0.6, "retrieval_i2t": 0.3},
             "units": [{"name": f"block.{k}", "blocks": [k], "groups": [f"block.{k}"], "parameter_count": 1} for k in range(3)],
             "effects": [effect(0, 0.02), effect(1, 0.09), effect(2, 0.04)], "steps": 2, "learning_rates": [5e-4], "mode": "default"}
    report = {"layers": [{"index": l, "name": f"hidden_states[{l}]", "hook": f"h{l}"} for l in range(4)],
              "sweep": sweep, "provenance": {"model_sha256": sha, "data_sha256": "test"}}
    (d / "report.json").write_text(json.dumps(report))
    negclip("select-layers", "--report", d / "report.json", "--policy", "top-k", "--k", "1", "--extras", "released",
            "--out", d / "layers.json")
    layers = json.loads((d / "layers.json").read_text())
    assert layers["groups"] == ["embeddings", "block.1", "final_ln", "projection", "logit_scale"]
    return d


@pytest.fixture(scope="module")
def omni_runs(world):
    """negclip train, torchrun x 2 and one process: 10 omni steps each from the same inputs."""
    args = ["--model", TINY, "--data", world / "world" / "captions.jsonl", "--layers", world / "layers.json",
            "--steps", "10", *COMMON]
    negclip("train", *args, "--out", world / "swift")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    if "GLOO_SOCKET_IFNAME" not in env and os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"   # gloo on the loopback, whatever the machine's hostname resolves to
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    # its own session, so a timeout ends torchrun's workers too, not only torchrun
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()), SCRIPT,
                          *map(str, args), "--threads", "1", "--out", world / "ddp"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"torchrun --nproc_per_node 2 did not finish in 240 s:\n{err[-3000:]}")
    assert p.returncode == 0, f"torchrun failed:\n{out}\n{err}"
    assert out.strip().endswith("checkpoint-10"), out
    torch_in_process([*args, "--out", world / "one"])
    return world


def test_ddp_two_processes_match_negclip_train(omni_runs):
    d = omni_runs
    swift, ddp = log(d / "swift"), log(d / "ddp")
    assert len(swift) == 10
    assert len({round(r["loss"], 4) for r in swift}) == 10, "the steps should see different batches"
    assert all(r["grad_norm"] > 1.0 for r in swift), "clipping should be active (--clip-grad 1.0)"
    assert_same_losses(ddp, swift, 1e-4, "torchrun x2 vs negclip train")

    base = load_file(os.path.join(TINY, "model.safetensors"))
    want, got = checkpoint(d / "swift", 10), checkpoint(d / "ddp", 10)
    assert_same_tensors(got, want, 1e-5, "torchrun x2 vs negclip train, checkpoint-10")
    state = json.loads((d / "ddp" / "checkpoint-10" / "trainer_state.json").read_text())
    swift_state = json.loads((d / "swift" / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["trainable_groups"] == swift_state["trainable_groups"]
    assert state["provenance"]["world_size"] == "2" and state["provenance"]["backend"] == "gloo"
    assert state["data_order"]["presence_seed"] == swift_state["data_order"]["presence_seed"]
    assert state["data_order"]["absence_seed"] == swift_state["data_order"]["absence_seed"]
    trained = set(state["trainable_parameters"])
    assert {k for k in base if k.startswith("text_model.encoder.layers.1.")} <= trained
    for k in base:
        moved = float(np.abs(got[k] - base[k]).max())
        if zero_gradient(k):
            continue
        if k in trained:
            assert moved > 1e-4, f"{k} trains but did not move ({moved:.3g})"
        else:
            assert moved == 0.0, f"{k} is frozen but changed by {moved:.3g}"
    # negclip reads the checkpoint (HF layout + our tokenizer files)
    negclip("evaluate", "--model", d / "ddp" / "checkpoint-10", "--data", d / "world" / "captions.jsonl",
            "--split", "val", "--bootstrap", "10", "--json", d / "eval.json")
    ev = json.loads((d / "eval.json").read_text())
    assert "presence" in json.dumps(ev)


def test_ddp_equals_one_process(omni_runs):
    d = omni_runs
    assert_same_losses(log(d / "ddp"), log(d / "one"), 1e-5, "torchrun x2 vs one process")
    # the same sums in another order: ~1e-7 in the losses; Adam's normalisation lifts that to ~1.5e-6 in
    # rarely-used token-embedding rows and the (zero-gradient) key biases, so parameters at negclip train's 1e-5
    assert_same_tensors(checkpoint(d / "ddp", 10), checkpoint(d / "one", 10), 1e-5, "torchrun x2 vs one process")


@pytest.mark.parametrize("extra", [
    ["--loss", "conclip"],
    ["--loss", "clip"],
    ["--loss", "negationclip"],
    ["--hinge", "shifted", "--margin", "0.3", "--lambda-stage2", "0.5", "--lambda-orig", "2", "--lambda-text", "3",
     "--weight-decay", "0.05"],
], ids=["conclip", "clip", "negationclip", "omni-shifted"])
def test_other_losses_match_negclip_train(world, extra, tmp_path):
    args = ["--model", TINY, "--data", world / "world" / "captions.jsonl", "--layers", world / "layers.json",
            "--steps", "3", *COMMON, *extra]
    negclip("train", *args, "--out", tmp_path / "swift")
    torch_in_process([*args, "--out", tmp_path / "torch"])
    assert_same_losses(log(tmp_path / "torch"), log(tmp_path / "swift"), 1e-4, f"{extra}")
    assert_same_tensors(checkpoint(tmp_path / "torch", 3), checkpoint(tmp_path / "swift", 3), 1e-5, f"{extra}")


def test_logit_scale_clamp_matches_negclip_train(world, tmp_path):
    """A base whose logit_scale is -0.5: both clamp it to [0, ln 100] after every update (open_clip), so it
    ends at 0; the layers.json was selected on the unmodified weights (--allow-other-model)."""
    import shutil
    from safetensors.numpy import save_file

    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    tensors = load_file(os.path.join(TINY, "model.safetensors"))
    tensors["logit_scale"] = np.array(-0.5, dtype=np.float32)
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    args = ["--model", model, "--data", world / "world" / "captions.jsonl", "--layers", world / "layers.json",
            "--allow-other-model", "--steps", "3", *COMMON]
    negclip("train", *args, "--out", tmp_path / "swift")
    torch_in_process([*args, "--out", tmp_path / "torch"])
    assert_same_losses(log(tmp_path / "torch"), log(tmp_path / "swift"), 1e-4, "logit_scale -0.5")
    got, want = checkpoint(tmp_path / "torch", 3), checkpoint(tmp_path / "swift", 3)
    assert_same_tensors(got, want, 1e-5, "logit_scale -0.5")
    assert float(want["logit_scale"]) >= 0.0 and float(got["logit_scale"]) >= 0.0, (want["logit_scale"], got["logit_scale"])


def test_bad_inputs_stop_with_one_line(world, tmp_path, capsys):
    data = world / "world" / "captions.jsonl"
    base = ["--model", TINY, "--steps", "1", "--batch", "4"]

    def fails(args, *needles):
        assert omni_negclip_torch.main([*base, *map(str, args), "--out", tmp_path / "out"]) == 2
        err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("omni_negclip_torch:")]
        assert len(err) == 1, err
        for n in needles:
            assert n in err[0], (n, err[0])
        assert not (tmp_path / "out").exists()

    layers = json.loads((world / "layers.json").read_text())
    wrong = dict(layers, hf_patterns=["text_model.encoder.layers.7.*"])
    (tmp_path / "deep.json").write_text(json.dumps(wrong))
    fails(["--data", data, "--layers", tmp_path / "deep.json"], "deep.json", "'hf_patterns'", "layers.7")
    other = dict(layers, provenance=dict(layers["provenance"], model_sha256="0" * 64))
    (tmp_path / "other.json").write_text(json.dumps(other))
    fails(["--data", data, "--layers", tmp_path / "other.json"], "other.json", "'provenance.model_sha256'", "--allow-other-model")
    (tmp_path / "bad.jsonl").write_text(data.read_text().splitlines()[0] + "\n" + '{"type": "caption", "id": "z", "split": "train", "image": "x.png", "caption": 5}\n')
    fails(["--data", tmp_path / "bad.jsonl", "--layers", world / "layers.json"], "bad.jsonl:2", "'caption'")
