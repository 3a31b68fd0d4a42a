#!/usr/bin/env python3
"""Caption/negation records for the real-language study (docs/real-encoder.md) from `negclip import` outputs.

usage: pairs.py [--origin TEXT] OUT.jsonl OUT.counts.json IMPORTED.jsonl...

--origin: where the imported files come from, recorded per source (default: the committed fixture's
origin per format, from Tests/Fixtures/peers/README.md).

Each imported file (with its OUT.provenance.json beside it, written by `negclip import`) contributes the
records that pair a caption with its negation, as probe-layers reads them (docs/data.md: `caption` with
`presence_negated` or `absence_negated`):

- ccneg: `caption` + `presence_negated` (the negation denies what the image shows), kept as imported.
- negationclip-coco: `caption` + `absence_negated` (adds an object the image does not show), kept.
- valse (existence): `caption` + `foil`, where one of the two is the other with the word "no" inserted
  ("There are cars parked." / "There are no cars parked.") or put in place of a determiner a/an/some/any
  ("There is a cat." / "There is no cat."). If the caption (true of the image) is the
  affirmative one, the negated foil denies a present object: `presence_negated`. If the caption is the
  negated one, it denies an absent object: `absence_negated`, paired with the affirmative foil (which
  is false of the image; the study is text-only, so only the texts and the kind are used). A pair
  of any other form is counted in `dropped` with the reason.
- negclip (TSV), negbench-mcq, negbench-retrieval, negrefcocog: no caption/negation pairs (word-order
  swaps; options about different objects; paraphrased queries; negated referring phrases with no
  affirmative counterpart); their records are counted, none is used.

Writes OUT.jsonl (sorted keys per line, temp file then rename) and OUT.counts.json: per source the
imported records, the pairs used per kind, what was dropped and why, and the source's sha256 from its
import provenance.
"""
import json
import os
import re
import sys

NOT_PAIRS = {
    "negclip": "its foils are word-order swaps (NegCLIP's hard negatives), not negations",
    "negbench-mcq": "its options are different sentences about one image (only the correct option carries a template label); no option is given as the negation of another",
    "negbench": "its options are different sentences about one image (only the correct option carries a template label); no option is given as the negation of another",
    "negbench-retrieval": "paraphrased retrieval queries, no affirmative/negated pairing",
    "negrefcocog": "negated referring phrases with no affirmative counterpart (a box-grounding task)",
}


# Where each committed fixture comes from (Tests/Fixtures/peers/README.md).
ORIGIN = {
    "ccneg": "built to CoN-CLIP's loader",
    "negationclip-coco": "built to NegationCLIP's generator",
    "negbench-mcq": "built to NegBench's generator",
    "negbench": "built to NegBench's generator",
    "negbench-retrieval": "built to NegBench's loader",
    "negclip": "verbatim excerpt",
    "negrefcocog": "verbatim excerpt",
    "valse": "verbatim excerpt",
}


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


DETERMINERS = {"a", "an", "some", "any"}


def negates(negated, affirmative):
    """True when `negated` is `affirmative` with the word "no" inserted ("There are no cars" / "There are
    cars") or put in place of a determiner ("There is no cat" / "There is a cat"); punctuation ignored."""
    n, a = words(negated), words(affirmative)
    if len(n) == len(a) + 1:
        return any(n[i] == "no" and n[:i] + n[i + 1:] == a for i in range(len(n)))
    if len(n) == len(a):
        diff = [i for i in range(len(n)) if n[i] != a[i]]
        return len(diff) == 1 and n[diff[0]] == "no" and a[diff[0]] in DETERMINERS
    return False


def fail(msg):
    sys.exit(f"pairs.py: {msg}")


def main(argv):
    origin = None
    if len(argv) > 2 and argv[1] == "--origin":
        origin, argv = argv[2], argv[:1] + argv[3:]
    if len(argv) < 4:
        fail("usage: pairs.py [--origin TEXT] OUT.jsonl OUT.counts.json IMPORTED.jsonl...")
    out, counts_out, inputs = argv[1], argv[2], argv[3:]
    records, counts = [], {}
    for path in inputs:
        prov_path = path + ".provenance.json"
        try:
            with open(prov_path) as f:
                prov = json.load(f)
        except (OSError, ValueError) as e:
            fail(f"{prov_path}: expected the import's provenance JSON (run negclip import), found {e}")
        fmt = prov.get("source_format")
        if fmt is None:
            fail(f"{prov_path}: key 'source_format': expected the peer format, found none")
        entry = {"file": os.path.basename(prov.get("source", path)), "format": fmt,
                 "source_sha256": prov.get("source_sha256"), "imported": 0, "left_out_by_import": prov.get("left_out", 0),
                 "presence_pairs": 0, "absence_pairs": 0, "dropped": 0, "note": NOT_PAIRS.get(fmt),
                 "origin": origin or ORIGIN.get(fmt, "unknown")}
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                r = json.loads(line)
                entry["imported"] += 1
                if r.get("type") != "caption" or fmt in NOT_PAIRS:
                    continue
                if fmt == "valse":
                    cap, foil = r.get("caption"), r.get("foil")
                    if cap is None or foil is None:
                        fail(f"{path}:{line_no}: VALSE record: expected keys 'caption' and 'foil'")
                    r = {k: v for k, v in r.items() if k != "foil"}
                    if negates(foil, cap):
                        r["presence_negated"] = foil
                    elif negates(cap, foil):
                        r["caption"], r["absence_negated"] = foil, cap
                    else:
                        entry["dropped"] += 1
                        entry["note"] = "dropped: neither text is the other with 'no' inserted or in place of a/an/some/any"
                        continue
                if "presence_negated" in r:
                    entry["presence_pairs"] += 1
                if "absence_negated" in r:
                    entry["absence_pairs"] += 1
                if "presence_negated" in r or "absence_negated" in r:
                    records.append(r)
        counts[entry["file"]] = entry
    if not records:
        fail("no caption/negation pairs in " + ", ".join(inputs))
    # image paths relative to the pairs file's folder (how negclip reads a relative path), so the
    # committed file names no machine's folders; the study is text-only and never opens them
    here = os.path.dirname(os.path.abspath(out))
    for r in records:
        for key in ("image", "absence_contrast_image"):
            if isinstance(r.get(key), str) and os.path.isabs(r[key]):
                r[key] = os.path.relpath(r[key], here)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    os.replace(tmp, out)
    tmp = counts_out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"format": "negclip.real-encoder-pairs 1", "sources": counts, "records": len(records)}, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, counts_out)


if __name__ == "__main__":
    main(sys.argv)
