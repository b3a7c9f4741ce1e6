"""Export of trained networks to ONNX bundles (folder ``export/``, import name ``g2g.export``)."""
