"""Evaluation: win rates (raw + length-controlled), pairwise head-to-head judging, reward-model metrics against
human rankings, reward-hacking monitors, the eval_results table and the run report.

Modules: annotations (reading AlpacaEval-format sets), winrate, length_control, pairwise, judges (local model /
OpenAI-compatible endpoint), judgment_cache, rate_limit, head2head, reward_model, monitors, results, runs, report.
"""
