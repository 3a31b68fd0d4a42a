"""The synthetic world on disk, read by a third, independent reader (Python, from docs/data.md).

Builds a world with `negclip make-world` (every negation template in every split, shown noise
negations, several pretraining captions per image) and checks every written record against the
documented semantics: a cue word ("no", "without", "not") negates the next object named, every
other object named is present, and after "only" the objects named are all the image shows.
Also checks world.json (sorted keys, options, the counts of false pretraining captions) and that
every object's colour is visible in its PNG. The binary is .build/debug/negclip, or
$NEGCLIP_SCRATCH_PATH/debug/negclip.
"""
import json
import os
import re
import subprocess
from collections import defaultdict

import pytest
from negclip_cli import negclip_binary

np = pytest.importorskip("numpy")
mpimg = pytest.importorskip("matplotlib.image")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
           "purple": (140, 40, 180), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10)}
SHAPES = {"circle", "square", "triangle", "diamond", "cross", "ring"}


def read(text):
    """(present, absent, only or None) of a world caption."""
    words = text.replace(",", " ").split()
    present, absent, only, negate = set(), set(), None, False
    i = 0
    while i < len(words):
        if words[i] in ("no", "without", "not"):
            negate = True
        if words[i] == "only":
            only = set()
        if words[i] in COLOURS and i + 1 < len(words) and words[i + 1] in SHAPES:
            name = words[i] + " " + words[i + 1]
            if negate:
                absent.add(name)
            else:
                present.add(name)
                if only is not None:
                    only.add(name)
            negate = False
            i += 1
        i += 1
    return present, absent, only


def true_of(text, objects):
    present, absent, only = read(text)
    objects = set(objects)
    return present <= objects and not (absent & objects) and (only is None or only == objects)


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    args = ["make-world", "--out", str(out), "--seed", "17", "--size", "150", "--pretrain-captions", "4",
            "--noise-negation-rate", "0.5", "--noise-negation-shown-rate", "0.6", "--held-out-templates", "none"]
    r = subprocess.run([negclip_binary(), *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_every_record_is_labelled_by_the_documented_semantics(world):
    captions = jsonl(world / "captions.jsonl")
    objects = {c["image"]: c["objects"] for c in captions}
    split_of = {c["image"]: c["split"] for c in captions}
    only_used = 0
    for c in captions:
        assert true_of(c["caption"], c["objects"]), c
        assert not true_of(c["presence_negated"], c["objects"]), c
        assert true_of(c["absence_negated"], c["objects"]), c
        assert not true_of(c["absence_negated"], c["contrast_objects"]), c
        assert read(c["absence_negated"])[1] == {c["absent_object"]}
        only_used += read(c["absence_negated"])[2] is not None
    for m in jsonl(world / "mcq.jsonl"):
        truth = [true_of(o, objects[m["image"]]) for o in m["options"]]
        assert truth.count(True) == 1 and truth[m["correct"]], (m, objects[m["image"]])
        only_used += any(read(o)[2] is not None for o in m["options"])
    for q in jsonl(world / "queries.jsonl"):
        want = sorted(i for i, objs in objects.items() if split_of[i] == q["split"] and true_of(q["text"], objs))
        assert sorted(q["relevant"]) == want, q["id"]
    assert only_used > 10, "the world should use 'only' often"


def test_pretraining_captions_are_false_exactly_as_world_json_says(world):
    captions = {c["image"]: c["objects"] for c in jsonl(world / "captions.jsonl")}
    stream = jsonl(world / "pretrain.jsonl")
    false = 0
    for p in stream:
        present, absent, _ = read(p["caption"])
        assert not (present & absent), p
        assert len(absent) == (1 if p["noise_negation"] else 0), p
        if not true_of(p["caption"], captions[p["image"]]):
            false += 1
            assert p["noise_negation"] and absent <= set(captions[p["image"]]), p
    with open(world / "world.json") as f:
        text = f.read()
    def sorted_keys(pairs):
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys), f"world.json keys not sorted: {keys}"
        return dict(pairs)
    manifest = json.loads(text, object_pairs_hook=sorted_keys)
    counts = manifest["pretrain"]
    assert counts["captions"] == len(stream) == 120 * 4
    assert counts["noise_negations"] == sum(p["noise_negation"] for p in stream)
    assert counts["false_captions"] == counts["noise_negations_shown"] == false
    # Expected share r * s * 3/4 = 0.225; 480 captions, so a loose band.
    assert 0.15 < false / len(stream) < 0.30, false / len(stream)
    cfg = manifest["config"]
    assert cfg["noise_negation_shown_rate"] == 0.6 and cfg["pretrain_captions_per_image"] == 4 and cfg["held_out_templates"] == []
    assert "--noise-negation-shown-rate 0.6" in manifest["provenance"]["command_line"]


def test_every_object_colour_is_visible(world):
    for c in jsonl(world / "captions.jsonl"):
        for image, objs in ((c["image"], c["objects"]), (c["absence_contrast_image"], c["contrast_objects"])):
            px = np.rint(mpimg.imread(str(world / image))[..., :3] * 255).astype(int)
            per_colour = defaultdict(int)
            for o in objs:
                per_colour[o.split()[0]] += 1
            for colour, n in per_colour.items():
                close = (np.abs(px - np.array(COLOURS[colour])).max(axis=-1) <= 16).sum()
                assert close >= 8 * n, f"{image}: {colour} covers {close} pixels for {n} object(s)"


def test_every_minimal_pair_has_equal_words_and_opposite_truth(world):
    """Probe splits (val, test): each caption record's minimal_pair is two captions of its own image
    with the same multiset of words, one true and one false by the documented semantics, the false one
    affirming an absent object; every template appears and the denied object is not always named last."""
    checked, denied_last, templates = 0, 0, set()
    for c in jsonl(world / "captions.jsonl"):
        pair = c.get("minimal_pair")
        if c["split"] == "train":
            assert pair is None, c["id"]
            continue
        assert pair is not None, c["id"]
        t, f = pair["true"], pair["false"]
        assert sorted(t.replace(",", " , ").split()) == sorted(f.replace(",", " , ").split()), (t, f)
        assert t != f
        assert true_of(t, c["objects"]), (t, c["objects"])
        assert not true_of(f, c["objects"]), (f, c["objects"])
        present_f, absent_f, _ = read(f)
        assert read(t)[1] == {pair["negated"]} and absent_f == {pair["affirmed"]}, pair
        assert pair["negated"] not in c["objects"] and pair["affirmed"] in c["objects"]
        assert pair["negated"] in present_f, "the false caption affirms an absent object"
        # the last object named (colour + shape) is the denied one exactly when negated_first is false
        words = t.replace(",", " ").split()
        last = max(i for i, w in enumerate(words) if w in COLOURS and i + 1 < len(words) and words[i + 1] in SHAPES)
        is_last = words[last] + " " + words[last + 1] == pair["negated"]
        assert is_last == (not pair["negated_first"]), pair
        denied_last += is_last
        templates.add(pair["template"])
        checked += 1
    assert checked == 30
    assert templates == {"but-no", "there-is-no", "without", "not", "no-only"}
    assert 0.25 < denied_last / checked < 0.75, denied_last / checked
