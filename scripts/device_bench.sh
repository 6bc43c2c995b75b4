#!/usr/bin/env bash
# The GPU measurements of experiments/benchmarks/, one step per device call (each fits 10 minutes).
#   bash scripts/device_bench.sh STEP...    from the repository root on the device, $OUT set
# Steps:
#   check          GPU tests: kernel vs PyTorch SSM parity, the CUDA-graph Mamba decoder
#   gen-mamba      mmssm-bench for the Mamba VLMs (Cobra-, MambaVLM-shaped)
#   gen-hf         mmssm-bench for the Transformer VLMs (Pythia-2.8B, Phi-2 TinyLLaVA)
#   eval-speed     evaluation speed, inference engine vs the HF baseline, batch invariance at scale
#   profile        decode step: op-by-op vs fused Triton step (tile sweep), prefill split, kernel table
#   gemv           batch-1 GEMV: cuBLAS vs a Triton row-block GEMV (config sweep)
#   scan           Triton selective scan: GPU tests (vs mamba_ssm, PyTorch, HF's block), then the
#                  Cobra-shape benchmark vs mamba_ssm and the Mamba-2.8B block step (hf vs fused mixer)
#   train-N        Cobra-recipe training throughput on N GPUs (FSDP; recompute: auto)
#   train-N-fused  the same with llm.mixer=fused (our mixer forward + Triton scan)
#   build-bg       build the mamba_ssm / causal_conv1d kernels into $SITE in the background (setsid:
#                  the build outlives the call while the machine stays warm); wait-kernels waits for it
#   table-fsdp     the tiny table (table=demo/shapes) as a 2-job sweep, FSDP on 2 GPUs: train, score, report
#   eval-torchrun  mmssm-eval of that sweep's checkpoint on 1 GPU and under torchrun on 2: same results.json
#   real-job       a Cobra-shaped job (random weights, 2 steps, FSDP on 2 GPUs) -> model.ckpt -> mmssm-eval
#   resume         2-GPU sharded checkpoint save, then resume from it
#   profile-train  the kernel table of two Cobra-recipe micro-batches (bench/throughput.py ProfileWindow)
# Carry: .whl (hydra-core, omegaconf, antlr4, mambapy wheels) and .kern (prebuilt kernels).
set -uo pipefail
source scripts/device_setup.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
dev=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")
for step in "$@"; do
  echo "=== $step"
  case $step in
    check)
      python3 -m pytest -q -p no:cacheprovider tests/test_ssm.py tests/test_mamba_decode.py tests/test_inference.py \
        -m "not slow" 2>&1 | tail -5 ;;
    gen-mamba)
      python3 -m mmssm_lightning.bench.cli "run=[cobra,mambavlm]" output=$OUT/generation_mamba_$dev.json \
        hydra.run.dir=/tmp/bench 2>&1 | grep -v "^\[transformers" | tail -8 ;;
    gen-hf)
      python3 -m mmssm_lightning.bench.cli "run=[pythia_vl,tinyllava]" output=$OUT/generation_hf_$dev.json \
        hydra.run.dir=/tmp/bench 2>&1 | grep -v "^\[transformers" | tail -8 ;;
    eval-speed)
      python3 scripts/bench_eval_speed.py --output $OUT/eval_speed_$dev.json 2>&1 | grep -v "^\[transformers" | tail -12 ;;
    profile)
      python3 scripts/profile_decode.py $OUT/decode_step_$dev.json $OUT/decode_profile_$dev.txt 2>&1 \
        | grep -v "^\[transformers" | tail -30 ;;
    gemv)
      python3 scripts/bench_gemv.py $OUT/gemv_$dev.json 2>&1 | tail -6 ;;
    build-bg)
      mkdir -p /tmp/kpack
      MAX_JOBS=${MAX_JOBS:-24} setsid nohup bash scripts/build_mamba_kernels.sh .kern/sdist "$SITE" /tmp/kpack \
        > /tmp/kbuild.log 2>&1 < /dev/null &
      echo "kernel build started (log /tmp/kbuild.log)" ;;
    wait-kernels)
      for _ in $(seq 600); do grep -q "mamba_ssm built" /tmp/kbuild.log 2>/dev/null && break; \
        grep -qiE "error" /tmp/kbuild.log 2>/dev/null && break; sleep 1; done
      tail -3 /tmp/kbuild.log; cp /tmp/kpack/*.build.json $OUT/ 2>/dev/null
      python3 -c "from mmssm_lightning.models.ssm import kernels; print('mamba kernels:', kernels() is not None)" ;;
    table-fsdp)
      rm -rf /tmp/tbl; MMSSM_ROOT=/tmp/tbl python3 -m mmssm_lightning.train -m table=demo/shapes trainer=fsdp \
        trainer.devices=2 trainer.max_steps=20 trainer.val_check_interval=10 data.per_device_batch_size=16 \
        eval.prepare.n=24 > $OUT/table_fsdp_2x$dev.log 2>&1; echo "sweep exit $?"
      sweep=/tmp/tbl/logs/train/multiruns/tables/demo/shapes
      cp $sweep/report/report.md $OUT/table_fsdp_2x${dev}_report.md
      python3 scripts/summarize_sweep.py $sweep $OUT/table_fsdp_2x$dev.json "table=demo/shapes trainer=fsdp trainer.devices=2" ;;
    eval-torchrun)
      ck=/tmp/tbl/logs/train/multiruns/tables/demo/shapes/seed-1/full/checkpoints/model.ckpt
      common="ckpt_path=$ck protocol=llava benchmarks=synthetic eval_root=/tmp/tbl/data_cache/synthetic_benchmarks run=[vqav2,pope,mmbench]"
      python3 -m mmssm_lightning.eval.evaluate $common hydra.run.dir=/tmp/ev1 > /tmp/ev1.log 2>&1
      torchrun --nproc-per-node 2 -m mmssm_lightning.eval.evaluate $common hydra.run.dir=/tmp/ev2 > /tmp/ev2.log 2>&1
      python3 scripts/compare_eval_results.py /tmp/ev1/results.json /tmp/ev2/results.json $OUT/eval_torchrun_2x$dev.json ;;
    real-job)
      python3 -m mmssm_lightning.train experiment=benchmarks/cobra_throughput trainer.devices=2 trainer.max_steps=2 \
        data.global_batch_size=32 callbacks.throughput.warmup_batches=1 callbacks.throughput.output=/tmp/rj_tp.json \
        hydra.run.dir=/tmp/rj > /tmp/rj.log 2>&1; echo "train exit $?"; grep -iE "error|Traceback" /tmp/rj.log | tail -3
      python3 -c "from mmssm_lightning.data.synthetic_benchmarks import write_benchmarks; write_benchmarks('/tmp/rjeval/b', n=16)"
      python3 -m mmssm_lightning.eval.evaluate ckpt_path=/tmp/rj/checkpoints/model.ckpt protocol=cobra benchmarks=synthetic \
        eval_root=/tmp/rjeval/b "run=[vqav2,pope]" max_samples=16 hydra.run.dir=/tmp/rje > /tmp/rje.log 2>&1
      echo "eval exit $?"; grep -iE "error|Traceback" /tmp/rje.log | tail -3
      python3 scripts/summarize_real_job.py /tmp/rj /tmp/rje $OUT/real_job_2x$dev.json ;;
    scan)
      python3 -m pytest -q -p no:cacheprovider tests/test_selective_scan_triton.py tests/test_hf_mamba.py \
        tests/test_ssm.py 2>&1 | tail -8
      python3 scripts/bench_selective_scan.py $OUT/selective_scan_$dev.json 2>&1 | grep -v "^\[transformers" | tail -30 ;;
    profile-train)
      python3 -m mmssm_lightning.train experiment=benchmarks/cobra_throughput trainer.max_steps=2 \
        "+callbacks.profile={_target_:mmssm_lightning.bench.throughput.ProfileWindow,start:5,count:2,output:$OUT/train_profile_1x$dev.txt}" \
        callbacks.throughput.output=/tmp/tp_profile.json hydra.run.dir=/tmp/train_profile 2>&1 | tail -3 ;;
    train-*-fused)
      n=${step#train-}; n=${n%-fused}
      python3 -m mmssm_lightning.train experiment=benchmarks/cobra_throughput trainer.devices=$n llm.mixer=fused \
        trainer.max_steps=$((2 * n)) callbacks.throughput.output=$OUT/throughput_${n}x${dev}_fused.json \
        hydra.run.dir=/tmp/train_${n}_fused 2>&1 | grep -E "throughput:|Error|error|Traceback" | tail -8 ;;
    train-*)
      n=${step#train-}
      python3 -m mmssm_lightning.train experiment=benchmarks/cobra_throughput trainer.devices=$n \
        trainer.max_steps=$((2 * n)) callbacks.throughput.output=$OUT/throughput_${n}x$dev.json \
        hydra.run.dir=/tmp/train_$n 2>&1 | grep -E "throughput:|Error|error|Traceback" | tail -8 ;;
    resume)
      # Sharded save at step 2 (one checkpoint kept: ~37 GB for 2.8B + Adam), resume to step 4.
      # (The checkpoint name holds '=': the override value is quoted for Hydra's grammar.)
      common="experiment=benchmarks/cobra_throughput trainer.devices=2 data.global_batch_size=32 \
        callbacks.throughput.warmup_batches=1 callbacks.checkpoint={_target_:lightning.pytorch.callbacks.ModelCheckpoint,dirpath:/tmp/resume,every_n_train_steps:2,save_top_k:1}"
      python3 -m mmssm_lightning.train $common trainer.max_steps=2 hydra.run.dir=/tmp/run_a \
        callbacks.throughput.output=/tmp/run_a.json > /tmp/resume_a.log 2>&1; grep -iE "error|Traceback|mismatched" /tmp/resume_a.log | tail -3
      python3 scripts/check_resume.py saved /tmp/resume $OUT/resume_2x$dev.json
      python3 -m mmssm_lightning.train $common trainer.max_steps=4 "ckpt_path='$(ls -d /tmp/resume/*step=2.ckpt)'" \
        hydra.run.dir=/tmp/run_b callbacks.throughput.output=/tmp/run_b.json > /tmp/resume_b.log 2>&1
      grep -iE "error|Traceback|mismatched|Restored" /tmp/resume_b.log | tail -3
      python3 scripts/check_resume.py resumed /tmp/resume $OUT/resume_2x$dev.json /tmp/resume_b.log ;;
  esac
done
