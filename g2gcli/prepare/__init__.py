"""``g2g prepare``: a folder of raw photos -> aligned face crops + a manifest.

Layout. ``SRC/<identity>/<photo>`` keeps its identity folders in DATA
(``DATA/<identity>/<stem>.png``; deeper folders are kept too, the identity is
the first folder). A photo directly in SRC (a flat folder) is its own identity,
named by its file stem, and is written flat (``DATA/<stem>.png``). With
``--faces all`` face k of a photo is ``<stem>_<k>.png`` (k by decreasing box area).
Two photos differing only in extension get ``<stem>_<ext>.png``.

Resume. Lines are appended as photos finish and crops are written atomically,
so a killed run loses at most the batch in flight; a rerun skips every source
whose latest line is final (:mod:`g2g.prepare.records`). Write errors are
retried; a full or read-only disk stops the run with one line. Options that
change the output (size, zoom, faces, min_face, min_score, fmt, max_pixels) must
match ``DATA/prepare_config.json``.
"""

from g2g.prepare.preview import PREVIEW_FILE, write_preview
from g2g.io.runfolder import MANIFEST
from g2g.prepare.records import MANIFEST_KEYS, current_records, read_manifest
from g2g.prepare.report import PrepareReport
from g2g.prepare.run import CONFIG_FILE, FORMATS, PrepareError, prepare_folder

__all__ = ["prepare_folder", "read_manifest", "current_records", "write_preview", "PrepareReport", "PrepareError",
           "MANIFEST", "MANIFEST_KEYS", "CONFIG_FILE", "FORMATS", "PREVIEW_FILE"]
