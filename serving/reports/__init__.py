"""Reports: photos taken in, stored and shown, in three modules.

- :mod:`serving.reports.upload`: one uploaded photo, from its bytes to its report, and the write
  order of an upload.
- :mod:`serving.reports.store`: analysed photos inserted as reports and grouped into incidents, the
  step that uploads and batch jobs share.
- :mod:`serving.reports.view`: a stored report looked up, checked for who may read it, and answered.
"""
