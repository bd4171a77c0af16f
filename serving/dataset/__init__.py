"""Reviewed photos as a YOLO dataset: what managers said is in the city's photos, ready to fine-tune on.

An export is a folder (``vipare dataset export OUT``, :mod:`serving.dataset_cli`) or a zip
(``POST /v1/datasets/export``, :mod:`serving.routes.datasets`), built in four steps, one module each:

- :mod:`serving.dataset.select`: which reports, one per photo, labelled by their current review
  (or the model's detections, when asked), under the time and place filters;
- :mod:`serving.dataset.splits`: train, val or test by incident, or by place-and-week cell, from a
  hash of the group, so a group keeps its split from one export to the next;
- :mod:`serving.dataset.layout`: the export's files, label lines, ``data.yaml`` and the dataset hash;
- :mod:`serving.dataset.write`: the files and the manifest, into a folder that appears complete or
  not at all, or into a zip.
"""
