"""CoN-CLIP's CC-Neg annotations (`ccneg_preprocessed.pt`, a torch pickle) -> JSON that
`negclip import --format ccneg` reads, keeping the layout and exactly the fields CoN-CLIP's own loader
reads (jaisidhsingh/CoN-CLIP src/data/evaluation_datasets.py, CCNegEvalDataset):

    {"image_paths": [...], "annotations": [{"json": {"caption": ...}, "sop_data": {"negative-prompt": ...}}, ...],
     "provenance": {...}}

Usage: python3 scripts/converters/ccneg_pt_to_json.py ccneg_preprocessed.pt ccneg.json
The output is written to a temporary file and renamed, with sorted keys and a provenance record.
"""
import hashlib
import json
import os
import sys
import tempfile

import torch


def main(src, dst):
    data = torch.load(src, map_location="cpu", weights_only=False)
    paths, anns = data["image_paths"], data["annotations"]
    if len(paths) != len(anns):
        sys.exit(f"{src}: expected one annotation per image path ({len(paths)}), found {len(anns)}")
    out = {
        "image_paths": [str(p) for p in paths],
        "annotations": [{"json": {"caption": a["json"]["caption"]},
                         "sop_data": {"negative-prompt": a["sop_data"]["negative-prompt"]}} for a in anns],
        "provenance": {"source": os.path.abspath(src),
                       "source_sha256": hashlib.sha256(open(src, "rb").read()).hexdigest(),
                       "tool": "scripts/converters/ccneg_pt_to_json.py", "torch": torch.__version__},
    }
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), suffix=".partial")
    with os.fdopen(fd, "w") as f:
        json.dump(out, f, sort_keys=True)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    os.replace(tmp, dst)
    print(f"wrote {dst}: {len(paths)} rows")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: ccneg_pt_to_json.py ccneg_preprocessed.pt out.json")
    main(sys.argv[1], sys.argv[2])
