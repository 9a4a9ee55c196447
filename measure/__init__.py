"""Measurement: accuracy and latency of PyTorch models and exported artifacts, on this host or a phone.

Downstream of :mod:`export_mobile` (it runs artifacts through :mod:`export_mobile.runners`) and of
:mod:`zoo` (models, datasets, metrics); nothing upstream imports it.

- :mod:`measure.baseline`: float PyTorch reference (accuracy, CUDA or CPU latency)
- :mod:`measure.check`: an artifact's accuracy on an evaluation set against that reference
- :mod:`measure.pt2e`: a quantized PT2E model (.pt2) checked like an artifact, its int8 numerics
  simulated in PyTorch
- :mod:`measure.bench`: latency of PyTorch and artifacts (table + JSON)
- :mod:`measure.device`: the demo apps' benchmark on phones, importing their results
- :mod:`measure.results`: the results-file contract (schema, loading, writing)
- :mod:`measure.report`, :mod:`measure.measured`: reports and the model cards' measured rows
- :mod:`measure.profile`: per-operator ExecuTorch profiles (ETDump)
"""
