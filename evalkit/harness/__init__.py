"""lm-evaluation-harness tasks as evalkit suites (`lm_eval:`), and the adapter check for what a fine-tune
forgot (`retention:`).

- :mod:`evalkit.harness.settings`: the `lm_eval:` section (read without importing lm_eval);
- :mod:`evalkit.harness.loading`: the task built by lm-eval's TaskManager, its data from `data_files:`,
  a mirror folder or the hub, and the `!function` rule;
- :mod:`evalkit.harness.lm`: lm-eval's ``LM`` interface answered by an evalkit backend (``--model evalkit``);
- :mod:`evalkit.harness.run`: a candidate evaluated by lm-eval's ``simple_evaluate``, as an evalkit result.
"""
