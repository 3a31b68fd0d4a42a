"""Writes the fixtures of this folder that are built to a peer's code, not cut from its real files
(those are not public): NegBench MCQ and retrieval, NegationCLIP's COCO JSON, CoN-CLIP's CC-Neg.

NegBench's CSVs are on a Google Drive, not in its repository, so the rows here are produced the way
the repository's generators write them (m1k2zoo/negbench at 2ac009b5adfb18d1d7c185c466b2bced10f43f6a):

- negbench_mcq.csv: synthetic_datasets/evaluation/create_mcq.py, image task (create_image_mcq): the
  template names and caption templates verbatim, correct answer always at index 0, columns
  correct_answer, caption_0..caption_3, correct_answer_template, image_path, `df.to_csv(index=False)`.
  The last rows carry rephrased captions as paraphrase_captions.py's own mcq_examples show them
  (the rephrasing keeps every column).
- negbench_retrieval.csv: what benchmarks/src/training/data.py (CsvImageCaptionDataset) reads:
  `filepath` and `captions`, the latter `str(list_of_captions)` as paraphrase_captions.py writes it
  back; the captions are paraphrase_captions.py's retrieval_examples (original and rephrased).

pandas' to_csv quotes like the csv module's QUOTE_MINIMAL with "\n" line ends; we use that here.

- negationclip_coco.json: parkquasar/NegationCLIP at 6f858ee490d5c17d54cbc1862dfd44f74f36324d,
  src/data_generation.py: COCO captions_train2014.json's info, licenses and *all* images, and only
  the annotations that got an `updated_caption`, json.dump(indent=4); read by src/clip_finetune.py
  (COCOCaptionDataset: images[id] -> file_name, annotation image_id, caption, updated_caption). The
  captions are data_generation.py's own few-shot examples.
- ccneg_conclip.json: jaisidhsingh/CoN-CLIP at 503388acb00b495a783b56b08d393027cd64b5a7: the layout of
  ccneg_preprocessed.pt that src/data/evaluation_datasets.py (CCNegEvalDataset) reads, saved with
  torch.save and converted by scripts/converters/ccneg_pt_to_json.py (needs torch; skipped without it).

Run: python3 make_built_fixtures.py
"""
import csv
import json
import os
import subprocess
import sys
import tempfile

def write(name, header, rows):
    with open(name, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)

def mcq_row(template, A, B, N, image):
    # create_image_mcq in create_mcq.py, verbatim templates.
    right = {"positive": f"This image features {A} and {B}",
             "negative": f"This image does not feature {N}",
             "hybrid": f"This image features {B}, but not {N}"}[template]
    answers = [right, f"This image features {N}, but not {B}", f"This image features {N}",
               f"This image does not feature {A}"]
    return [0, *answers, template, image]

mcq = [
    mcq_row("positive", "dog", "frisbee", "cat", "val2017/000000000139.jpg"),
    mcq_row("negative", "dog", "frisbee", "bench", "val2017/000000000139.jpg"),
    mcq_row("hybrid", "dog", "frisbee", "car", "val2017/000000000139.jpg"),
    mcq_row("hybrid", "sink", "spoon", "bottle", "val2017/000000000285.jpg"),
    # Rephrased rows (paraphrase_captions.py mcq_examples show the style).
    [0, "This image features a sink and a spoon.", "There is no spoon included in this image.",
     "This image shows a bottle.", "This image contains a bottle but no sink.", "positive", "val2017/000000000285.jpg"],
    [0, "There is no car included in this image.", "This image features a car, but no sink is present.",
     "This image shows a car.", "There is no sink included in this image.", "negative", "val2017/000000000285.jpg"],
]
write("negbench_mcq.csv", ["correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
                           "correct_answer_template", "image_path"], mcq)

retrieval = [
    ["val2017/000000000139.jpg", str([
        "A table with pies being made and a person standing near a wall with pots and pans hanging on the wall. There is no fork in the image.",
        "A table where pies are being prepared and a person stands near a wall with hanging pots and pans, but there is no fork in sight."])],
    ["val2017/000000000285.jpg", str([
        "There is no handbag in the image. A man on a skateboard performs a trick at the skate park.",
        "No handbag is present in the image; instead, a man on a skateboard is performing a trick at the skate park.",
        "There is no fork in the image. A person standing by a stove in a kitchen."])],
    ["val2017/000000000632.jpg", str([
        "No cup can be seen in the image; instead, the dining table near the kitchen holds a bowl of fruit.",
        "A homeless man stands on the street, holding a cup and next to a shopping cart, with no car present in the image.",
        "There is no dog in the image. The kitchen's counter holds a bowl of fruit."])],
]
write("negbench_retrieval.csv", ["filepath", "captions"], retrieval)

# NegationCLIP: COCO layout, indent=4, as data_generation.py dumps it.
coco = {
    "info": {"description": "COCO 2014 Dataset", "url": "http://cocodataset.org", "version": "1.0", "year": 2014,
             "contributor": "COCO Consortium", "date_created": "2017/09/01"},
    "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
                  "name": "Attribution-NonCommercial-ShareAlike License"}],
    "images": [
        {"license": 1, "file_name": "COCO_train2014_000000057870.jpg", "coco_url": "http://images.cocodataset.org/train2014/COCO_train2014_000000057870.jpg",
         "height": 480, "width": 640, "date_captured": "2013-11-14 16:28:13", "flickr_url": "http://farm4.staticflickr.com/3153/2970773875_164f0c0b83_z.jpg", "id": 57870},
        {"license": 1, "file_name": "COCO_train2014_000000384029.jpg", "coco_url": "http://images.cocodataset.org/train2014/COCO_train2014_000000384029.jpg",
         "height": 429, "width": 640, "date_captured": "2013-11-14 16:29:45", "flickr_url": "http://farm3.staticflickr.com/2422/3577229611_3a3235458a_z.jpg", "id": 384029},
        {"license": 1, "file_name": "COCO_train2014_000000222016.jpg", "coco_url": "http://images.cocodataset.org/train2014/COCO_train2014_000000222016.jpg",
         "height": 640, "width": 480, "date_captured": "2013-11-14 16:37:59", "flickr_url": "http://farm2.staticflickr.com/1431/1118526611_09172475e5_z.jpg", "id": 222016},
    ],
    "annotations": [
        {"image_id": 57870, "id": 787980, "caption": "a woman riding a horse in a field",
         "updated_caption": "a woman not wearing a hat riding a horse in a field"},
        {"image_id": 384029, "id": 789366, "caption": "a child playing with a ball in the park",
         "updated_caption": "a child playing with a ball in the park with no tree"},
        {"image_id": 384029, "id": 789888, "caption": "a child playing with a ball in the park",
         "updated_caption": "a child without a hat playing with a ball in the park"},
    ],
}
with open("negationclip_coco.json", "w") as f:
    json.dump(coco, f, indent=4)

# CoN-CLIP: the .pt layout CCNegEvalDataset reads, through our converter.
try:
    import torch
except ImportError:
    print("SKIPPED ccneg_conclip.json: torch is not installed", file=sys.stderr)
else:
    ccneg = {
        "image_paths": ["/workspace/datasets/cc3m/cc3m_subset_images_extracted_final/000000001.jpg",
                        "/workspace/datasets/cc3m/cc3m_subset_images_extracted_final/000000002.jpg",
                        "/workspace/datasets/cc3m/cc3m_subset_images_extracted_final/000000003.jpg"],
        "annotations": [
            {"json": {"caption": "a man is sitting on a chair"}, "sop_data": {"negative-prompt": "a man is not sitting on a chair"}},
            {"json": {"caption": "a dog running on the beach"}, "sop_data": {"negative-prompt": "a dog not running, on the beach"}},
            {"json": {"caption": "actor attends the premiere of the film"}, "sop_data": {"negative-prompt": "actor does not attend the premiere of the film"}},
        ],
    }
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        pt = os.path.join(tmp, "ccneg_preprocessed.pt")
        torch.save(ccneg, pt)
        subprocess.run([sys.executable, os.path.join(here, "../../../scripts/converters/ccneg_pt_to_json.py"), pt, "ccneg_conclip.json"], check=True)
    # The provenance names a temporary file; keep the fixture stable.
    out = json.load(open("ccneg_conclip.json"))
    out["provenance"] = {"source": "ccneg_preprocessed.pt built by make_built_fixtures.py", "tool": "scripts/converters/ccneg_pt_to_json.py"}
    with open("ccneg_conclip.json", "w") as f:
        json.dump(out, f, sort_keys=True, indent=1)
