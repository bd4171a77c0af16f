"""Reports: photos taken in, stored and shown.

``store``: uploaded photos and street-camera frames, from their analysis to their stored reports.
"""
