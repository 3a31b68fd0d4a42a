#!/usr/bin/env python3
"""Render docs/real-encoder.md from a probe-layers report.json and the study's study.json.

usage: render.py REPORT.json STUDY.json OUT.md [REPORT2.json STUDY2.json]   (OUT.md "-" writes to stdout)

REPORT2/STUDY2: a second run (the whole VALSE existence file), appended under STUDY2's `title` and
`introduction`.

Every number in the page comes from REPORT.json (negclip.probe-layers-report v3, text-only run of
all-MiniLM-L6-v2) or STUDY.json (negclip.real-encoder-study 1, written by
scripts/real_encoder_study.sh: what each imported peer file contributed, the dump's BERT layer
definition and tokenizer, the study's command). A missing key is a one-line error naming the file and
the key, exit status 2. The page is written to a temp file, then renamed. Standard library only.
"""
import json
import os
import sys

REPORT_FORMAT = "negclip.probe-layers-report v3"
STUDY_FORMAT = "negclip.real-encoder-study 1"


class InputError(Exception):
    pass



def shown_command(line):
    """The command line with the binary named as `negclip` (its build folder is the machine's)."""
    head, _, rest = line.partition(" ")
    return (os.path.basename(head) + " " + rest) if rest else os.path.basename(head)


def repo_relative(path):
    """A path inside a checkout of this repository, from the repository root (any checkout's
    absolute prefix, e.g. a helper's worktree, dropped); another path as it is."""
    marker = "/docs/real-encoder/"
    return path[path.index(marker) + 1:] if marker in path else path

def need(obj, path, file):
    """obj[path] for a dotted path ("separation.presence.model"); a one-line InputError when absent."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, list):
            try:
                cur = cur[int(part)]
                continue
            except (ValueError, IndexError):
                raise InputError(f"{file}: missing key '{path}' (expected index {part} of a list)")
        if not isinstance(cur, dict) or part not in cur:
            raise InputError(f"{file}: missing key '{path}'")
        cur = cur[part]
    return cur


def estimates(obj, path, file, count):
    """A list of `count` estimates {mean, low, high, n} (one per layer)."""
    xs = need(obj, path, file)
    if not isinstance(xs, list) or len(xs) != count:
        raise InputError(f"{file}: key '{path}': expected {count} per-layer estimates, found {type(xs).__name__} of length {len(xs) if isinstance(xs, list) else '-'}")
    for i in range(count):
        for k in ("mean", "low", "high", "n"):
            need(obj, f"{path}.{i}.{k}", file)
    return xs


def optional_estimates(obj, path, file, count):
    """Like `estimates`, but an absent or empty list (no random-weights network was run) gives None."""
    try:
        xs = need(obj, path, file)
    except InputError:
        return None
    return estimates(obj, path, file, count) if xs else None


def against(e, name):
    """Where a gain's interval lies against 0: above / below `name`, or not resolved."""
    return f"above {name}" if e["low"] > 0 else f"below {name}" if e["high"] < 0 else "not resolved"


def layers_named(ls):
    return f"layer{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))}"


def est(e, digits=3):
    return f"{e['mean']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


def overlaps(a, b):
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})")
    except ValueError as e:
        raise InputError(f"{path}: expected JSON, found a parse error ({e})")


def separation_section(report, rfile, kind, layers, hooks):
    base = f"separation.{kind}"
    pairs = need(report, f"{base}.pairs", rfile)
    unrelated_pairs = need(report, f"{base}.baselines.unrelated_pairs", rfile)
    raw = estimates(report, f"{base}.model", rfile, layers)
    unrel = estimates(report, f"{base}.baselines.model.unrelated", rfile, layers)
    z = estimates(report, f"{base}.baselines.model.standardised", rfile, layers)
    centred = estimates(report, f"{base}.baselines.model.centred", rfile, layers)
    # the random-weights network (same config, transformers' init), when the run has one
    gain = optional_estimates(report, f"{base}.baselines.standardised_gain_over_random", rfile, layers)
    zr = estimates(report, f"{base}.baselines.random.standardised", rfile, layers) if gain else None
    lines = [f"### {kind.capitalize()} negations ({pairs} caption/negation pairs, {unrelated_pairs} unrelated pairs)", "",
             "| layer | hook | cos(caption, negation) | cos(unrelated pair) | standardised z | centred cos(caption, negation) | z against 0 |"
             + (" z random weights | z gain over random | against random |" if gain else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|---|" if gain else "")]
    for l in range(layers):
        verdict = "closer than unrelated" if z[l]["low"] > 0 else "farther than unrelated" if z[l]["high"] < 0 else "not resolved from 0"
        row = f"| {l} | `{hooks[l]}` | {est(raw[l])} | {est(unrel[l])} | {est(z[l], 2)} | {est(centred[l])} | {verdict} |"
        if gain:
            row += f" {est(zr[l], 2)} | {est(gain[l], 2)} | {against(gain[l], 'random')} |"
        lines.append(row)
    best = min(range(layers), key=lambda l: z[l]["mean"])
    worst = max(range(layers), key=lambda l: z[l]["mean"])
    tied = [l for l in range(layers) if l != best and overlaps(z[l], z[best])]
    apart = [l for l in range(layers) if z[l]["low"] > z[best]["high"]]
    summary = {"kind": kind, "pairs": pairs, "best": best, "best_z": z[best], "tied": tied, "apart": apart,
               "worst": worst, "worst_z": z[worst], "raw_min": min(range(layers), key=lambda l: raw[l]["mean"]),
               "raw": raw, "unrel": unrel, "z": z, "all_positive": all(e["low"] > 0 for e in z), "gain": gain}
    lines += ["", f"Lowest standardised z (most separated relative to unrelated captions): layer {best}, z = {est(z[best], 2)}. "
              + (f"Its interval overlaps those of layer{'s' if len(tied) > 1 else ''} {', '.join(map(str, tied))}: not resolved among them. " if tied else "No other layer's interval overlaps it. ")
              + (f"Resolved as less separated (interval entirely above layer {best}'s): layer{'s' if len(apart) > 1 else ''} {', '.join(map(str, apart))}." if apart else "No layer is resolved as less separated."), ""]
    return lines, summary


def raw_note(s, layers):
    """What the raw cosine would say, next to the standardised z."""
    raw, unrel, best, rmin = s["raw"], s["unrel"], s["best"], s["raw_min"]
    notes = []
    if rmin != best:
        notes.append(f"The raw cosine alone would point at layer {rmin} ({est(raw[rmin])}), but there the unrelated pairs' "
                     f"cosine is {est(unrel[rmin])} against {est(unrel[best])} at layer {best}: the raw cosine follows how "
                     "anisotropic the layer is, the standardised z corrects for it.")
    else:
        notes.append(f"The raw cosine agrees: its lowest is at layer {rmin} too ({est(raw[rmin])}).")
    last = layers - 1
    if s["worst"] != last and last in s["apart"]:
        notes.append(f"The last layer, the pooled sentence embedding, gives part of that separation back: z = {est(s['z'][last], 2)}, "
                     f"resolved above layer {best}'s.")
    if s["worst"] == last and last in s["apart"]:
        gain = s["gain"]
        if gain is None:
            origin = "; without a random-weights baseline this is not shown to come from training."
        elif gain[last]["high"] < 0:
            origin = (f"; the random-weights network separates them more there (z gain over random {est(gain[last], 2)}, "
                      "below 0 by its interval): training pulled a caption and its negation together at the output.")
        else:
            origin = f"; against the random-weights network its gain is {est(gain[last], 2)} ({against(gain[last], 'random')})."
        notes.append(f"The last layer (the pooled sentence embedding) is where a caption and its negation are least apart "
                     "relative to unrelated captions, as one expects of an output trained for sentence similarity (a "
                     "sentence and its negation share topic and words)" + origin)
    return " ".join(notes)


def render(report, study, rfile, sfile):
    fmt = need(report, "format", rfile)
    if fmt != REPORT_FORMAT:
        raise InputError(f"{rfile}: key 'format': expected \"{REPORT_FORMAT}\", found \"{fmt}\"")
    sfmt = need(study, "format", sfile)
    if sfmt != STUDY_FORMAT:
        raise InputError(f"{sfile}: key 'format': expected \"{STUDY_FORMAT}\", found \"{sfmt}\"")
    layer_list = need(report, "layers", rfile)
    layers = len(layer_list)
    hooks = [need(report, f"layers.{i}.hook", rfile) for i in range(layers)]
    prov = need(report, "provenance", rfile)
    for k in ("model", "model_sha256", "data", "data_sha256", "command_line", "created_utc", "tool", "tool_version"):
        need(report, f"provenance.{k}", rfile)
    split = need(report, "inputs.split", rfile)
    config_sha = need(report, "inputs.model_config_sha256", rfile)
    sources = need(study, "sources", sfile)
    out = ["# A real pretrained text encoder: where all-MiniLM-L6-v2 separates negation", "",
           f"Generated by `{need(study, 'command', sfile)}` (the renderer `scripts/real_encoder/render.py` reads "
           "`docs/real-encoder/report.json`, the probe-layers report, and `docs/real-encoder/study.json`, and the same two files "
           "of `docs/real-encoder/valse-full/` for the second run); do not edit by hand. "
           "`scripts/checks/test_real_encoder_report.py` checks that this page is what the renderer makes of those files.", "",
           "The question of issue 21, item 3: on real English captions and their negations, which layer of a real pretrained "
           "text encoder keeps a caption and its negation apart, and where can a linear probe read \"negated or not\" "
           "better than the words alone? The encoder is sentence-transformers' all-MiniLM-L6-v2 (a BERT-family sentence "
           f"encoder, {layers - 1} blocks, layers 0..{layers - 1}), read by `negclip` (docs/bert.md).", "",
           "## Provenance", "",
           f"- model: `{prov['model']}`, weights sha256 `{prov['model_sha256']}`, config.json sha256 `{config_sha}`",
           f"- tokenizer: {need(study, 'dump.tokenizer', sfile)}",
           f"- data: `{repo_relative(prov['data'])}` (split `{split}`), sha256 `{prov['data_sha256']}`",
           f"- probe-layers: `{shown_command(prov['command_line'])}` ({prov['tool']} {prov['tool_version']}, {prov['created_utc']}, seeds {prov.get('seeds')})",
           f"- layers: {need(study, 'dump.layer_definition', sfile)}",
           (f"- random-weights baseline: a BertModel of the same config.json and tokenizer, every tensor drawn as transformers' "
            f"`BertPreTrainedModel._init_weights` draws it (normal(0, initializer_range) weights, zero biases, LayerNorm 1 and 0), "
            f"seed {report['inputs']['random_weights_seed']} (`--random-seed`; negclip's SplitMix64, not torch's generator)"
            if report.get("inputs", {}).get("random_weights_seed") is not None else "- random-weights baseline: not run"),
           "", "## Data: what each source contributes", "",
           f"{need(study, 'data_description', sfile)} `negclip import` converted each file (images not needed: "
           "`--keep-missing-images`, the study is text-only), then `scripts/real_encoder/pairs.py` kept the records that pair a "
           "caption with its negation. Presence: the negation denies something the image shows; absence: it denies something "
           "the image does not show (docs/data.md).", "",
           "| file | format | origin | sha256 | records imported | left out by the import | presence pairs | absence pairs | not used because |",
           "|---|---|---|---|---|---|---|---|---|"]
    total_p = total_a = 0
    for name in sorted(sources):
        s = sources[name]
        for k in ("format", "origin", "source_sha256", "imported", "left_out_by_import", "presence_pairs", "absence_pairs", "dropped", "note"):
            need(s, k, f"{sfile}: sources.{name}")
        total_p += s["presence_pairs"]
        total_a += s["absence_pairs"]
        why = s["note"] or ""
        if s["dropped"]:
            why = f"{s['dropped']} dropped; " + why
        out.append(f"| `{name}` | {s['format']} | {s['origin']} | `{s['source_sha256'][:12]}` | {s['imported']} | {s['left_out_by_import']} "
                   f"| {s['presence_pairs']} | {s['absence_pairs']} | {why} |")
    out += ["", f"In all: {total_p} presence and {total_a} absence caption/negation pairs ({2 * (total_p + total_a)} texts).", ""]

    out += ["## Separation per layer", "",
            "Per layer l, the cosine between the rows a caption and its negation get (the layer's mean over the text's "
            "tokens, sentence-transformers' pooling applied to hidden_states[l]); the unrelated pairs are two affirmative "
            "captions of different records; the standardised separation is z = (mean cos(caption, negation) - mean "
            "cos(unrelated)) / sd cos(unrelated): 0 = a caption is as close to its negation as to an unrelated caption, "
            "lower = more separated (docs/probing.md, \"Separation against baselines\"). 95% percentile bootstrap intervals "
            f"({need(report, 'settings.bootstrap_resamples', rfile)} resamples; pairs by pair id, unrelated pairs one by one)."
            + (" The random-weights columns: z of the random BERT (Provenance) on the same pairs, and the gain z(random) - "
               "z(trained), bootstrapped with the same resamples: above 0 = the trained layer keeps a caption and its negation "
               "further apart, relative to unrelated captions, than the same architecture with random weights does."
               if report.get("inputs", {}).get("random_weights_seed") is not None else ""), ""]
    summaries = []
    for kind in ("presence", "absence"):
        lines, summary = separation_section(report, rfile, kind, layers, hooks)
        out += lines
        summaries.append(summary)

    probes = need(report, "probes", rfile)
    task = next((p for p in probes if isinstance(p, dict) and need(p, "task.name", rfile) == "negated"), None)
    if task is None:
        raise InputError(f"{rfile}: missing key 'probes[task.name = negated]' (run probe-layers with --task negated)")
    acc = estimates(task, "model", f"{rfile}: probes.negated", layers)
    gain = estimates(task, "gain_over_bag_of_words", f"{rfile}: probes.negated", layers)
    rgain = optional_estimates(task, "gain_over_random", f"{rfile}: probes.negated", layers)
    racc = estimates(task, "random", f"{rfile}: probes.negated", layers) if rgain else None
    control = estimates(task, "control", f"{rfile}: probes.negated", layers)
    bow = need(task, "bag_of_words", f"{rfile}: probes.negated")
    negator = need(task, "baselines.negator", f"{rfile}: probes.negated")
    last_object = need(task, "baselines.last_object", f"{rfile}: probes.negated")
    chance = need(task, "chance", f"{rfile}: probes.negated")
    items = need(task, "items", f"{rfile}: probes.negated")
    groups = need(task, "groups", f"{rfile}: probes.negated")
    folds = need(report, "settings.folds", rfile)
    out += ["## Probe: negated vs affirmative", "",
            f"Task `negated` (probes/negated.yaml): the caption and its negations labelled affirmative / negated, {items} texts "
            f"in {groups} groups (a caption, its negations and any identical text), {folds}-fold cross-validation grouped by "
            "those groups, logistic regression with C chosen by nested cross-validation (docs/probing.md). The other tasks "
            "cannot run on this data: `negation_kind` and `truth` need image embeddings (MiniLM has no image tower), "
            "`negated_object` (negation scope) needs the denied object named in each record, which no imported source gives.", "",
            f"Baselines on the same folds: chance {chance:.3f}; bag of words {est(bow)}; negator word alone {est(negator)}; "
            f"last object phrase {est(last_object)}."
            + (" Random weights: the same probe on the random BERT's rows; gain over random: paired per text." if rgain else ""), "",
            "| layer | accuracy | gain over bag of words | control task | verdict |"
            + (" random weights | gain over random | against random |" if rgain else ""),
            "|---|---|---|---|---|" + ("---|---|---|" if rgain else "")]
    verdicts = []
    for l in range(layers):
        v = "above bag of words" if gain[l]["low"] > 0 else "below bag of words" if gain[l]["high"] < 0 else "not resolved"
        verdicts.append(v)
        row = f"| {l} | {est(acc[l])} | {est(gain[l])} | {est(control[l])} | {v} |"
        if rgain:
            row += f" {est(racc[l])} | {est(rgain[l])} | {against(rgain[l], 'random')} |"
        out.append(row)
    perfect = [l for l in range(layers) if acc[l]["mean"] == 1]
    out.append("")
    if perfect:
        bound_items, bound_groups = 0.05 ** (1 / items), 0.05 ** (1 / groups)
        out += [f"Layers {', '.join(map(str, perfect))} classify every text correctly; a percentile bootstrap cannot go above "
                f"the observed 1.000, so their interval collapses. For scale: with {items} texts all correct the one-sided 95% "
                f"lower bound on the accuracy is {bound_items:.3f} if the texts were independent, {bound_groups:.3f} counting "
                f"only the {groups} groups.", ""]

    # What it shows, from the numbers above.
    out += ["## What it shows", ""]
    for s in summaries:
        z = s["z"]
        said = []
        if s["all_positive"]:
            said.append("At every layer a caption stays closer to its negation than to an unrelated caption (every z interval above 0).")
        below = [l for l in range(layers) if z[l]["high"] < 0]
        if below:
            said.append(f"At layer{'s' if len(below) > 1 else ''} {', '.join(map(str, below))} a caption is farther from its "
                        "negation than from an unrelated caption of the same data (z interval below 0).")
        said.append(f"The lowest z is at layer {s['best']} ({est(s['best_z'], 2)})"
                    + (f", not resolved from layer{'s' if len(s['tied']) > 1 else ''} {', '.join(map(str, s['tied']))}" if s["tied"] else "")
                    + f"; the highest at layer {s['worst']} ({est(s['worst_z'], 2)})"
                    + (f", resolved as less separated than layer {s['best']}" if s["worst"] in s["apart"] else "") + ".")
        said.append(raw_note(s, layers))
        if s["gain"]:
            up = [l for l in range(layers) if s["gain"][l]["low"] > 0]
            down = [l for l in range(layers) if s["gain"][l]["high"] < 0]
            said.append("Against the random-weights network (standardised gain): "
                        + (f"{layers_named(up)} separate more by the interval" if up else "no layer separates more by its interval")
                        + (f"; {layers_named(down)} less" if down else "") + ".")
        out.append(f"- **Separation, {s['kind']}** ({s['pairs']} pairs): " + " ".join(said))
    n_above = sum(v == "above bag of words" for v in verdicts)
    n_below = sum(v == "below bag of words" for v in verdicts)
    probe_line = (f"- **Probe negated vs affirmative**: {n_above} of {layers} layers beat bag of words by their interval, "
                  f"{n_below} fall below it, {layers - n_above - n_below} are not resolved (bag of words {est(bow)}, the negator "
                  f"word alone {est(negator)}).")
    if n_above == 0:
        probe_line += (" No layer reads \"negated or not\" better than the words of the caption do: on these captions it is "
                       "word detection, and the probe cannot place negation in a layer here.")
    else:
        above = [str(l) for l in range(layers) if verdicts[l] == "above bag of words"]
        probe_line += f" Above bag of words by the interval: layer{'s' if len(above) > 1 else ''} {', '.join(above)}."
    if rgain:
        up = [l for l in range(layers) if rgain[l]["low"] > 0]
        down = [l for l in range(layers) if rgain[l]["high"] < 0]
        probe_line += (" Against the random-weights network: "
                       + (f"{layers_named(up)} beat it by the interval" if up else "no layer beats it by its interval")
                       + (f", {layers_named(down)} fall below it" if down else "") + ".")
    out.append(probe_line)
    used = sorted(n for n in sources if sources[n]["presence_pairs"] + sources[n]["absence_pairs"] > 0)
    origin_note = "; ".join(f"`{n}`: {sources[n]['origin']} ({sources[n]['presence_pairs'] + sources[n]['absence_pairs']} pairs)" for n in used)
    out += ["", "## Limits", "",
            "- **A sentence encoder, not CLIP's text tower.** all-MiniLM-L6-v2 was trained for sentence similarity "
            "(mean pooling, contrastive pairs), not for image-text alignment, with bidirectional attention and post-LN blocks. "
            "Where it separates negation says nothing direct about where CLIP's causal, pre-LN text tower does.",
            (f"- **Small excerpts, wide intervals.** {total_p} presence and {total_a} absence pairs, {items} probe texts in "
             f"{groups} groups: the intervals are wide and mostly overlap; \"not resolved\" above means an interval includes the "
             f"baseline (or the other layer). Where the pairs come from: {origin_note} (Tests/Fixtures/peers/README.md: files "
             "built to a peer's generator or loader use the peer's own examples where the real file is not public)."
             if total_p + total_a < 100 else
             f"- **One source, one construction.** {total_p} presence and {total_a} absence pairs ({origin_note}); "
             "\"not resolved\" above means an interval includes the baseline (or the other layer)"
             + (". Every pair is one template family (\"There is/are (no) X ...\"), so the separation is measured on one "
                "construction of negation, not on negation in general." if len(used) == 1 else ".")),
            *(["- **Percentile bootstrap at the edge.** An all-correct layer gets the interval [1, 1]; see the bound above."] if perfect else []),
            *random_limit(summaries, rgain, racc, layers),
            "- **No negation scope.** None of the imported sources names the denied object, so `negated_object` "
            "(scope) is not measured; no image tasks (`negation_kind`, `truth`) on a text-only encoder; no sweep, gradient "
            "predictors or patching (they need CLIP).",
            "- **Which rows.** Each layer's row is the mean over the text's tokens (MiniLM's pooling), not an end-of-text row"
            + ("; the report.json's `layer_definition` and `inputs.rows` still state CLIP's definition (probe-layers before "
               "it read a BERT dump's own), the BERT one is the dump's (Provenance above)."
               if not str(report.get("provenance", {}).get("layer_definition", "")).startswith("BERT") else
               " (report.json's `layer_definition` and `inputs.rows` say so)."), ""]
    return "\n".join(out)


def random_limit(summaries, rgain, racc, layers):
    """The Limits item on the random-weights baseline: what it now says, or that it was not run."""
    if rgain is None and not any(s["gain"] for s in summaries):
        return ["- **No random-weights baseline.** This run has no random-weights network (`--random-seed`), so a separation "
                "or probe score is not split into what training put in and what the architecture gives anyway."]
    parts = []
    for s in summaries:
        if s["gain"]:
            up = [l for l in range(layers) if s["gain"][l]["low"] > 0]
            parts.append(f"separation ({s['kind']}): {layers_named(up) if up else 'no layer'} beat{'' if len(up) > 1 else 's'} it by the interval")
    if rgain:
        up = [l for l in range(layers) if rgain[l]["low"] > 0]
        parts.append(f"probe: {layers_named(up) if up else 'no layer'} beat{'' if len(up) > 1 else 's'} it by the interval"
                     + (" (the random network itself reads it at 1.000 at every layer: the negation word is decodable "
                        "without training)" if racc and all(e["mean"] == 1 for e in racc) else ""))
    return ["- **One random-weights network.** The gain over random compares with one random BERT of the same config "
            "(transformers' init, one seed): its intervals cover the resampling of pairs and texts, not the draw of the random "
            "network. What it says here: " + "; ".join(parts) + ". A layer that does not beat it is not shown to hold "
            "more than the architecture gives with random weights."]


def render_page(rfile, sfile, extra):
    """The page for the first run; `extra` (REPORT.json, STUDY.json) appends a second run under its
    study's `title`, its headings one level down and without the page's own title and introduction."""
    text = render(load(rfile), load(sfile), rfile, sfile)
    if extra:
        erfile, esfile = extra
        estudy = load(esfile)
        title = need(estudy, "title", esfile)
        body = render(load(erfile), estudy, erfile, esfile)
        body = body[body.index("## Provenance"):]
        body = "\n".join("#" + line if line.startswith("##") else line for line in body.split("\n"))
        text = text + "\n## " + title + "\n\n" + need(estudy, "introduction", esfile) + "\n\n" + body
    return text


def main(argv):
    if len(argv) not in (4, 6):
        print("render.py: usage: render.py REPORT.json STUDY.json OUT.md [REPORT2.json STUDY2.json]", file=sys.stderr)
        return 2
    rfile, sfile, target = argv[1:4]
    try:
        text = render_page(rfile, sfile, argv[4:6] if len(argv) == 6 else None)
    except InputError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    if target == "-":
        sys.stdout.write(text)
        return 0
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
