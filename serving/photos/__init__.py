"""Photos the service keeps, in nine modules.

- :mod:`serving.photos.metadata`: removing from a photo's file everything its display does not need.
- :mod:`serving.photos.heif`: the same for HEIC/HEIF, item by item in the file's boxes.
- :mod:`serving.photos.anonymise`: the bytes stored, faces and licence plates blurred.
- :mod:`serving.photos.backend`: what every photo store offers (the copies of a photo, read, written, swept).
- :mod:`serving.photos.store`: the store in a folder, its crash-safe write order and its orphan sweep.
- :mod:`serving.photos.s3`: the store in an S3-compatible bucket several hosts share.
- :mod:`serving.photos.location`: which store the settings name (``VIPARE_PHOTO_STORE``).
- :mod:`serving.photos.workers`: the lock between the processes that write to one store.
- :mod:`serving.photos.render`: the photo with its detections drawn, made on request.
"""
