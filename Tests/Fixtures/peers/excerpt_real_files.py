"""Cuts the verbatim excerpts in this folder out of the peers' real files (README.md names the
repositories and commits). Records are copied byte for byte, only the enclosing brackets are added.

    python3 excerpt_real_files.py --negclip valid_neg_clip.tsv --valse existence.json --negrefcocog NegRefCOCOg.json
"""
import argparse
import json


def records_by_marker(text, starts):
    """Slices of `text` from each start offset to the next record's start."""
    return [text[a:b] for a, b in zip(starts, starts[1:])]


def negclip(src, indices, dst):
    data = open(src, newline="").read()
    header = data[:data.index("\n") + 1]
    def rec(i):
        s = data.index("\n%d\t" % i) + 1
        return data[s:data.index("\n%d\t" % (i + 1)) + 1]
    open(dst, "w", newline="").write(header + "".join(rec(i) for i in indices))


def valse(src, keys, dst):
    # The file is a JSON object written with indent=4: each record starts at '    "key": {'.
    text = open(src).read()
    order = list(json.loads(text))
    starts = [text.index('\n    "%s": {' % k) + 1 for k in order]
    ends = starts[1:] + [text.rindex("\n}")]
    chunks = {k: text[a:b].rstrip().rstrip(",") for k, a, b in zip(order, starts, ends)}
    body = ",\n".join(chunks[k] for k in keys)
    open(dst, "w").write("{\n" + body + "\n}\n")
    assert list(json.load(open(dst))) == keys


def negrefcocog(src, indices, dst):
    # A JSON array written with indent=4: each record starts at '    {' on its own line.
    text = open(src).read()
    starts = [i + 1 for i in range(len(text)) if text.startswith("\n    {\n", i)]
    ends = starts[1:] + [text.rindex("\n]")]
    chunks = [text[a:b].rstrip().rstrip(",") for a, b in zip(starts, ends)]
    assert len(chunks) == len(json.loads(text))
    open(dst, "w").write("[\n" + ",\n".join(chunks[i] for i in indices) + "\n]\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--negclip"); p.add_argument("--valse"); p.add_argument("--negrefcocog")
    a = p.parse_args()
    if a.negclip:
        negclip(a.negclip, [0, 1, 2, 3, 4, 8, 48, 1203, 2495], "negclip_valid_neg_clip.tsv")
    if a.valse:
        # Both foil directions (zero_to_something, something_to_zero), items VALSE's scripts drop
        # (mturk caption 0, and 1 of 3), and the one item whose foil equals its caption (dropped too).
        valse(a.valse, ["existence_visual7w_2371044", "existence_visual7w_2393805", "existence_visual7w_150304",
                        "existence_visual7w_1", "existence_visual7w_2360434", "existence_visual7w_2360734",
                        "existence_visual7w_2326438"],
              "valse_existence.json")
    if a.negrefcocog:
        negrefcocog(a.negrefcocog, [0, 1, 4, 6, 19, 20], "negrefcocog.json")
