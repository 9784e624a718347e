#!/usr/bin/env bash
# The GPU check of issues 10 and 18, as ONE script of at most 8 minutes on one GPU with 16
# cores, sections in priority order (benchmarks/gpu_check.py's docstring): loader scaling
# at 1/4/8/16 workers (two-frame pairs and 16-frame clips), the training step's MFU (ViT-B/16
# eager with its profile, compiled, ViT-L/16), pretraining end to end over 64-step epochs,
# the video and image fine-tune steps (samples/s, MFU, peak memory) and end to end, and the
# CUDA-only code paths. Writes benchmarks/results/gpu_*.json as it goes and prints a summary
# table last.
#
#   bash scripts/gpu-check.sh --bundle bundle          # on a GPU node without network
#   bash scripts/gpu-check.sh                          # vicmae already installed
#   bash scripts/gpu-check.sh --cpu                    # rehearsal here: tiny settings, CPU
#
# Options:
#   --bundle DIR   install DIR (made by `make bundle`) offline first, into $TMPDIR, and
#                  train/load from DIR/data/clips.beton
#   --cpu          rehearsal on the CPU (no GPU, no bundle needed): tiny model, few steps,
#                  2 workers, a small .beton made on the spot unless --bundle gives one
#   --results DIR  where the JSON goes (GPU: benchmarks/results; --cpu: build/gpu-check-cpu)
#   --beton PATH   train and load from this .beton instead (default: the bundle's)
#   --site DIR     where --bundle installs to (default: a new folder in $TMPDIR)
#   --python PY    the interpreter (default: .venv/bin/python if present, else python3;
#                  with --bundle: python3, the node's)
#   --only LIST    comma-separated sections (loader,train_b,train_b_compile,train_l,e2e,
#                  finetune_video,finetune_image,paths); --list prints them with their caps
# When $OUT is set (the device runner's folder of files to bring back), the JSON files and
# the log are copied there as each section ends.
set -uo pipefail
started=$(date +%s)
cd "$(dirname "$0")/.."

cpu=0 bundle="" beton="" site="" results="" python="" only="" list=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu=1 ;;
        --bundle) bundle=$2; shift ;;
        --results) results=$2; shift ;;
        --site) site=$2; shift ;;
        --beton) beton=$2; shift ;;
        --python) python=$2; shift ;;
        --only) only=$2; shift ;;
        --list) list=1 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$python" ]; then
    if [ -z "$bundle" ] && [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
# The plan (sections, caps, budget), and the sections --only names, checked before anything
# is installed or run.
plan=("$python" benchmarks/gpu_check.py --list)
[ $cpu = 1 ] && plan+=(--cpu)
[ -n "$only" ] && plan+=(--only "$only")
if [ $list = 1 ]; then "${plan[@]}"; exit $?; fi
"${plan[@]}" >/dev/null || exit 2
if [ -z "$results" ]; then
    if [ $cpu = 1 ]; then results=build/gpu-check-cpu; else results=benchmarks/results; fi
fi
mkdir -p "$results"
results=$(cd "$results" && pwd)
log="$results/gpu_check.log"
: >"$log"
export PYTHONUNBUFFERED=1

# 1. The bundle, offline (seconds): wheels into a private folder, libraries beside them.
if [ -n "$bundle" ]; then
    [ -f "$bundle/install.sh" ] || { echo "gpu-check: $bundle/install.sh not found" >&2; exit 2; }
    [ -n "$site" ] || site=$(mktemp -d "${TMPDIR:-/tmp}/vicmae-site.XXXXXX")
    echo "[gpu-check] installing $bundle into $site" | tee -a "$log"
    PYTHON="$python" bash "$bundle/install.sh" "$site" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "gpu-check: bundle install failed" >&2; exit 2; }
    # shellcheck disable=SC1091
    source "$site/env.sh"
    [ -n "$beton" ] || beton="$bundle/data/clips.beton"
fi

# 2. What ran where: the GPU, the versions, the cores.
{
    echo "[gpu-check] $(date -u +%FT%TZ) on $(hostname), $(nproc) cores"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())'
} 2>&1 | tee -a "$log"

# 3. Data for the rehearsal when no bundle gives it: a few small synth clips (seconds).
if [ -z "$beton" ]; then
    if [ $cpu = 0 ]; then
        echo "gpu-check: pass --bundle DIR or --beton PATH (what to train on), or --cpu" >&2
        exit 2
    fi
    data=$(mktemp -d "${TMPDIR:-/tmp}/vicmae-gpucheck-data.XXXXXX")
    trap 'rm -rf "$data"' EXIT
    "$python" -c 'from vicmae_cli.data import app; app()' synth --layout kinetics400 \
        --out "$data/k400" --videos 48 --split train >>"$log" 2>&1 &&
        "$python" -c 'from vicmae_cli.data import app; app()' convert kinetics400 \
            --root "$data/k400" --out "$data/clips.beton" --short-side 64 --workers 2 \
            --max-frames 8 >>"$log" 2>&1 ||
        { echo "gpu-check: making the rehearsal .beton failed; see $log" >&2; exit 1; }
    beton="$data/clips.beton"
fi

# 4. The sections (each under its own hard cap), then the summary table.
args=(--beton "$beton" --results "$results" --started "$started")
[ $cpu = 1 ] && args+=(--cpu)
[ -n "$only" ] && args+=(--only "$only")
"$python" benchmarks/gpu_check.py "${args[@]}"
rc=$?

if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp "$results"/gpu_*.json "$log" "$OUT"/ 2>/dev/null
fi
echo "[gpu-check] done in $(($(date +%s) - started)) s; results in $results"
exit $rc
