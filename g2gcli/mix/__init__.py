"""``g2g mix POSES IDS -o OUT``: every planned (pose, identity) pair through a mixing method (g2g.methods).

Cost. Each identity is aligned and encoded once and each pose once, whatever
N x M is (a funit model: E_B's K-shot code and E_A's content map; the appearance
model and the pastes: 68 landmarks and the face mask); per pair runs only what
depends on both (the funit decoder; the appearance model's warp, E_B and decoder;
a paste), in batches of ``batch_size``. Identity encodings stay in memory;
pose encodings are kept for one chunk of poses at a time, so memory does not
grow with N.

Pipeline. While the session encodes and decodes one chunk of poses, a
background thread prepares the next (decode in ``workers`` threads, MTCNN in
batches, alignment in threads). Paste-back and writing run in a writer pool;
a manifest line is appended after its output is on disk.

Resume. Outputs are written atomically and a pair is done when its last
manifest line is ``ok`` for the same model and settings and its output and
mixed crop are still the files written (size and sha256 in the manifest), so a
killed run loses only the pairs in flight and a damaged output is redone. Skipped pairs are
retried on a rerun (a fixed photo is picked up); ``g2g eval`` reads the last
line per pair.

Layout of OUT: the outputs (pasted photos, or crops with --aligned/--crop-only), ``aligned/poses``,
``aligned/ids`` and ``aligned/mixed`` (the crops), ``manifest.jsonl``, ``run.json`` and ``grid.jpg``.
"""

from g2g.mix.grid import GRID_FILE, write_grid
from g2g.mix.report import MixReport
from g2g.io.runfolder import MANIFEST
from g2g.mix.resume import latest_records, settings_sha256
from g2g.mix.run import RUN_FILE, MixError, check_mix_config, crop_side, mix_folders

__all__ = ["MixError", "MixReport", "mix_folders", "check_mix_config", "write_grid", "latest_records", "settings_sha256", "crop_side",
           "MANIFEST", "RUN_FILE", "GRID_FILE"]
