"""Reviewed photos as a YOLO dataset (``vipare dataset export``, ``POST /v1/datasets/export``).

:mod:`serving.dataset.write` selects the photos, splits them, writes the files and the manifest.
"""
