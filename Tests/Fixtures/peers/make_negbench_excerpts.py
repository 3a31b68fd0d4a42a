"""Writes the NegBench fixtures in this folder exactly as NegBench's own scripts lay them out.

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
Run: python3 make_negbench_excerpts.py (no dependencies).
"""
import csv

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
