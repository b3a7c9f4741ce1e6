"""Files: atomic writes and output-folder markers, run-folder manifests, safe photo loading, contact sheets."""
