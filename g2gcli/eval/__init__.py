"""``g2g eval`` (folder ``g2gcli/eval/``, import name ``g2g.eval``): one module per metric, ``run`` drives them.

``run`` (the verb: a mix folder or a model + DATA), ``retrieval`` (id-sim, retrieval, pose leak),
``pose``, ``expression``, ``realism`` (a classifier two-sample test of mixed vs real faces, on
``texture`` statistics, with ``c2st``), ``recon``, ``baselines`` (the no-model methods on the same
pairs), ``metrics`` (the formulas), ``runs`` (reading a mix run), ``report`` and ``plots``.
Torch-free; only a reconstruction's optional LPIPS uses torch where it is installed.
"""

from g2g.eval.run import (IDENTITY_NETS, METRICS, MIX_METRICS, EvalError, EvalReport, MixRun, evaluate, load_mix,
                          open_identity_net, parse_metrics, read_crop, reference_distributions)

__all__ = ["evaluate", "EvalReport", "EvalError", "METRICS", "MIX_METRICS", "IDENTITY_NETS", "parse_metrics",
           "load_mix", "MixRun", "read_crop", "open_identity_net", "reference_distributions"]
