"""Evaluation: win rates (raw + length-controlled), pairwise head-to-head judging, reward-model metrics against
human rankings, reward-hacking monitors, the eval_results table and the run report.

Modules: use_cases (each evaluation as a library call, optionally recorded: what `srlm eval` runs), suites (the
suites the orchestrated `evaluate` step runs on a checkpoint), annotations and sources (reading AlpacaEval-format
sets and other inputs), winrate, length_control, pairwise, judges (local model / OpenAI-compatible endpoint),
judgment_cache, rate_limit, head2head, reward_model, monitors, results (eval_results and its reuse rule), runs,
report (report_data: what it shows; report_charts: matplotlib; templates/*.j2: the pages).
"""
