"""Step 6: evaluation — generation backends, answer scoring and the benchmarks.

Where things are: ``runner`` (evaluate a model: generate, score, write) over ``benchmarks`` (the registry and its
problems), ``generate`` (one call, the backend choice) with ``generate_common`` and one module per backend
(``generate_transformers``, ``generate_ctranslate2``, ``generate_vllm``), ``scoring`` (answers, pass@k),
``sandbox`` (code tests), ``report`` (tables, plots) and ``rescore`` (saved samples under another rule).
"""
