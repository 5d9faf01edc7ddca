# Trainer settings read by tools/train_net.py.
train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=90000,
    # Mixed precision: dtype "float16" (with a grad scaler), "bfloat16", or "auto": bf16 where
    # the device computes it natively, fp16 on older GPUs, fp32 on CPUs without native bf16
    # (vitdet.device.resolve_amp_dtype; the log says what was chosen and why).
    amp=dict(enabled=False, dtype="float16"),
    # Optimizer step every `grad_accum_steps` iterations of total_batch_size / grad_accum_steps
    # images each: batch 64 on fewer GPUs.
    grad_accum_steps=1,
    # > 0: gradients scaled down to this total L2 norm when above it (logged as grad_norm).
    clip_grad_norm=0.0,
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    # The last 3 periodic checkpoints are kept, plus model_final.pth: with optimizer state a
    # ViT-H checkpoint is ~8 GB.
    checkpointer=dict(period=5000, max_to_keep=3),
    eval_period=5000,
    log_period=20,
    device="cuda",  # tools/train_net.py falls back to "cpu" when CUDA is unavailable
    # CPU runs: True has glibc's malloc keep freed memory for reuse instead of unmapping every
    # block over 32 MB and faulting it in again next step (vitdet.device.keep_freed_memory). On
    # an Intel Xeon with AMX: a ViT-B step at 1024 px 26.5-32.2 -> 23.0-26.4 s, peak RSS 3.7 -> 5.2
    # GB; but the Synthetic config's step, whose tensors are small, took 8-12% more CPU time
    # (tools/benchmarks/synthetic.py steps, alternated runs). Off by default.
    keep_freed_memory=False,
    seed=-1,  # -1: a random seed, logged
)
