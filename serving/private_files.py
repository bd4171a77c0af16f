"""What vipare keeps is its user's only: the data folder 0700, every file the service writes 0600.

The data folder holds street photos (passers-by, plates), where they were taken, and the API keys'
hashes. Every process that opens it (the service's workers, batch jobs, the ``vipare`` commands that
read or write the store) goes through :func:`serving.db.engine_from_settings`, which calls
:func:`keep_private` first: the data folder is created 0700, or tightened to 0700 when it exists
(what an older version left readable below it is then out of other users' reach too), and the
process's umask becomes ``0o077``, so every file it creates from then on (the SQLite file and its
WAL, the photos and their folders, the model copies, the writers' marks, a log file) is 0600 and
every folder 0700, without each writer having to say so.
The umask is the process's: a service or a command owns its process, and nothing it writes is meant
for other users.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_FILE", "PRIVATE_FOLDER", "PRIVATE_UMASK", "keep_private"]

PRIVATE_UMASK = 0o077
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def keep_private(data_dir: Path) -> None:
    """Make ``data_dir`` (created with its parents) 0700, and what this process creates from now on private.

    Args:
        data_dir: the service's data folder (``ServiceSettings.data_dir``).
    """
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o777 != PRIVATE_FOLDER:
        data_dir.chmod(PRIVATE_FOLDER)
