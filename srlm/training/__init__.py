"""Training: TRL SFT (seed, M0) and DPO (one self-rewarding iteration), the launcher that runs either as its own
process and commits + registers the checkpoint, and the per-run checkpoint registry.

    sft.train_sft / dpo.train_dpo     in-process training into a local directory
    launch.run_training_job           the same in a child process (accelerate for >1 GPU), committed and registered
    registry                          register_checkpoint, get_checkpoint, list_checkpoints, latest_final

Heavy imports (torch, transformers, trl, peft) happen inside functions.
"""
