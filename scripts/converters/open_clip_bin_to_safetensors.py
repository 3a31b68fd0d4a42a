"""open_clip's pickled weights (`open_clip_pytorch_model.bin`, or a training checkpoint with a
`state_dict`) -> `open_clip_model.safetensors`, the file `negclip` reads beside `open_clip_config.json`.

The pickle is read with torch's restricted unpickler (`torch.load(weights_only=True)`): only the globals
that rebuild tensors and plain containers are allowed, so a file that carries code (a `__reduce__` to
os.system, any other global) is refused with one line naming the file and nothing in it runs. Keys keep
open_clip's names; a `module.` prefix (DistributedDataParallel training checkpoints) is dropped, as
open_clip's `load_checkpoint` does. Every value must be a tensor.

Usage: python scripts/converters/open_clip_bin_to_safetensors.py FOLDER_OR_BIN [OUT.safetensors]
  (default OUT: open_clip_model.safetensors beside the .bin). Written to a temporary name, then renamed;
  the safetensors metadata records the source file's sha256 and this tool.
"""
import hashlib
import os
import sys
import tempfile
import warnings

import torch
from safetensors.torch import save_file

TOOL = "scripts/converters/open_clip_bin_to_safetensors.py v1"
BIN, OUT = "open_clip_pytorch_model.bin", "open_clip_model.safetensors"


class ConversionError(Exception):
    pass


def unpickler_reason(e):
    """The part of torch's message that names what was refused (its first lines advise weights_only=False,
    exactly what must not be done with an untrusted file)."""
    for line in str(e).splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line and not line.startswith(("Weights only load failed", "Check the documentation")):
            return line
    return type(e).__name__


def read_state_dict(src):
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols; the error says what matters
            warnings.simplefilter("ignore")
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler's refusal, or a file that is not a torch pickle
        raise ConversionError(f"{src}: refused: not a plain tensor pickle, it may carry code; nothing in it was run "
                              f"(torch's restricted unpickler: {unpickler_reason(e)})")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{src}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ConversionError(f"{src}: key '{k}': expected a tensor, found {type(v).__name__}")
    return obj


def convert(src, dst=None):
    if os.path.isdir(src):
        src = os.path.join(src, BIN)
    if not os.path.isfile(src):
        raise ConversionError(f"{src}: no such file (expected {BIN} or a folder holding it)")
    dst = dst or os.path.join(os.path.dirname(os.path.abspath(src)), OUT)
    state = read_state_dict(src)
    # safetensors refuses shared storage; contiguous copies are independent.
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    sha = hashlib.sha256(open(src, "rb").read()).hexdigest()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), suffix=".partial")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "source": os.path.basename(src), "source_sha256": sha,
                                          "tool": TOOL, "torch": torch.__version__})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst, len(tensors)


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[-4])
    try:
        dst, n = convert(argv[1], argv[2] if len(argv) == 3 else None)
    except ConversionError as e:
        sys.exit(str(e))
    print(f"wrote {dst}: {n} tensors")


if __name__ == "__main__":
    main(sys.argv)
