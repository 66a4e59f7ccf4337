#!/usr/bin/env bash
# The GPU report in one command: latency of every network at 4K, ONNX Runtime, video throughput.
#
#     bash tools/gpu_report.sh [--dry-run] [--budget SECONDS] [--no-install] [--stages LIST]
#                              [--stage-cap STAGE=SECONDS ...] [OUTDIR]
#
# OUTDIR: default $OUT, else ./gpu_report. Writes there gpu_report.md (environment, stage log, all
# tables), gpu_report.json, runtime_4k.csv, latency_vs_params.png and gpu_report.log (this console).
#
# 1. Installs what the machine lacks, offline, from wheelhouse/py<X.Y>/ (tools/build_wheelhouse.sh):
#    `pip install --no-index --find-links ... --no-deps --target` into a temporary folder put first
#    on PYTHONPATH (the machine's Python is left untouched; its torch, onnxruntime, ... are used).
#    Only distributions whose module does not import are installed; --no-install skips this step.
# 2. Runs the stages in this order, each under `timeout` with its own cap, never more than what is
#    left of the total budget (default 480 s, 30 s of it kept for the report); a stage that runs
#    out of time is killed and logged "timed out", one that fails "failed (exit N): last line",
#    one not run "skipped: why"; the report is written whatever happened:
#      env          GPU, driver, torch, CUDA, cuDNN, Triton, onnxruntime and its providers
#      runtime      rtsr-runtime, NTIRE 2023 protocol, LRSRN and RT4KSR, with channels_last,
#                   CUDA graph and batch-4 columns, roofline bound and measured/bound
#      compile      the same two with torch.compile (max-autotune-no-cudagraphs)
#      onnx         LRSRN x2 and RT4KSR x2 under ONNX Runtime's CUDA and TensorRT providers
#      video        tools/bench_video.py --quick --device auto
#      runtime_all  rtsr-runtime --all (every other architecture), channels_last, CUDA graph, batch 4
# --dry-run (CPU): tiny inputs and few passes; compile and runtime_all are skipped (torch.compile
# takes minutes on CPU; tests/test_runtime_tool.py covers --all). --stages runtime,onnx runs only
# those; --stage-cap onnx=60 changes one cap.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$(command -v python || command -v python3)}  # the machine's Python (python3 only on some)
DRY=0 INSTALL=1 BUDGET=480 RESERVE=30 OUTDIR= STAGES=env,runtime,compile,onnx,video,runtime_all
declare -A CAP=([env]=60 [runtime]=150 [compile]=180 [onnx]=150 [video]=90 [runtime_all]=240)

usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,4\}//'; }
die() { echo "gpu_report: error: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --no-install) INSTALL=0 ;;
        --budget) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--budget: expected whole seconds, got '${2:-}'"; BUDGET=$2; shift ;;
        --stages) [[ -n ${2:-} ]] || die "--stages: expected a comma-separated list"; STAGES=$2; shift ;;
        --stage-cap)
            [[ ${2:-} =~ ^([a-z_]+)=([0-9]+)$ && -n ${CAP[${BASH_REMATCH[1]}]:-} ]] ||
                die "--stage-cap: expected STAGE=SECONDS with STAGE one of ${!CAP[*]}, got '${2:-}'"
            CAP[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option '$1'" ;;
        *) [[ -z $OUTDIR ]] || die "one OUTDIR expected, got '$OUTDIR' and '$1'"; OUTDIR=$1 ;;
    esac
    shift
done
[[ -n $PY ]] || die "no python or python3 on PATH (set PYTHON=/path/to/python)"
for stage in ${STAGES//,/ }; do
    [[ -n ${CAP[$stage]:-} ]] || die "--stages: unknown stage '$stage' (stages: ${!CAP[*]})"
done
OUTDIR=${OUTDIR:-${OUT:-gpu_report}}
mkdir -p "$OUTDIR" || die "$OUTDIR: cannot create the output folder"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_report.XXXXXX")
exec > >(tee "$OUTDIR/gpu_report.log") 2>&1
TEE=$!
trap 'exec >&- 2>&-; wait "$TEE"; rm -rf "$WORK"' EXIT
cd "$ROOT"
START=$SECONDS
MODE=$( ((DRY)) && echo 'dry run (CPU)' || echo 'full run')
echo "gpu_report: $(date -u +%FT%TZ), $MODE, budget ${BUDGET}s, output $OUTDIR"

# ---------------------------------------------------------------------------- offline install
declare -A DIST=([basicsr]=basicsr [lmdb]=lmdb [av]=av [addict]=addict [yapf]=yapf [yaml]=PyYAML [tqdm]=tqdm
                 [safetensors]=safetensors [matplotlib]=matplotlib [onnx]=onnx [rtsr_arch]=rtsr_arch)
missing_dists() {  # distributions (and matplotlib's, onnx's, yapf's requirements) whose module is absent
    (cd / && "$PY" - "${!DIST[@]}" <<'EOF'
import importlib.util, sys
print('\n'.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
    ) | while read -r module; do
        echo "${DIST[$module]}"
        [[ $module == matplotlib ]] && echo contourpy cycler fonttools kiwisolver pyparsing python-dateutil
        [[ $module == onnx ]] && echo ml_dtypes
        [[ $module == yapf ]] && echo platformdirs
    done
}
if ((INSTALL)); then
    version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    read -ra need <<<"$(missing_dists | tr '\n' ' ')"
    if ((${#need[@]} == 0)); then
        echo "install: nothing to install (every module imports)"
    elif [[ ! -d wheelhouse/py$version ]]; then
        echo "install: missing ${need[*]}, but there is no wheelhouse/py$version (run tools/build_wheelhouse.sh" \
             "and carry wheelhouse/py$version with the repository); going on, stages will fail"
    else
        SITE=$WORK/site
        echo "install: ${need[*]} from wheelhouse/py$version (offline)"
        if "$PY" -m pip --version >/dev/null 2>&1; then
            "$PY" -m pip install -q --no-index --no-deps --find-links "wheelhouse/py$version" --target "$SITE" \
                "${need[@]}"
        else  # no pip: a wheel is a zip of what goes into site-packages
            echo "install: no pip; unpacking the wheels"
            "$PY" - "wheelhouse/py$version" "$SITE" "${need[@]}" <<'EOF'
import re, sys, zipfile
from pathlib import Path
folder, site, names = Path(sys.argv[1]), sys.argv[2], {re.sub(r'[-_.]+', '_', n).lower() for n in sys.argv[3:]}
for wheel in folder.glob('*.whl'):
    if wheel.name.split('-')[0].lower() in names:
        zipfile.ZipFile(wheel).extractall(site)
EOF
        fi
        if (($? == 0)); then
            export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        else
            echo "install: failed; going on, stages will fail"
        fi
    fi
fi

# ---------------------------------------------------------------------------- stages
: >"$WORK/stages.tsv"
record() {  # NAME STATUS SECONDS CAP NOTE
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/stages.tsv"
    if [[ $2 == skipped ]]; then echo "== $1: skipped: $5"; else echo "== $1: $2 (${3}s of ${4}s)${5:+: $5}"; fi
}
wanted() { [[ ,$STAGES, == *,$1,* ]]; }
run_stage() {  # NAME COMMAND...: run under the stage's cap, bounded by the budget left
    local name=$1; shift
    if ! wanted "$name"; then record "$name" skipped 0 0 "not in --stages"; return; fi
    local left=$((BUDGET - RESERVE - (SECONDS - START))) cap=${CAP[$name]}
    ((cap > left)) && cap=$left
    if ((cap <= 0)); then record "$name" skipped 0 0 "budget spent"; return; fi
    echo "== $name (cap ${cap}s): $*"
    local begin=$SECONDS status
    timeout -k 10 "$cap" "$@" 2>&1 | tee "$WORK/$name.log"
    status=${PIPESTATUS[0]}
    local took=$((SECONDS - begin))
    case $status in
        0) record "$name" ok "$took" "$cap" "" ;;
        124|137) record "$name" "timed out" "$took" "$cap" "killed after ${cap}s; results measured before are kept" ;;
        *) record "$name" "failed (exit $status)" "$took" "$cap" \
               "$(grep -v '^\s*$' "$WORK/$name.log" | tail -1 | cut -c1-300 | tr '\t' ' ')" ;;
    esac
}
skip() { record "$1" skipped 0 0 "$2"; }

RUNTIME=("$PY" tools/runtime_4k.py --keep-going)
if ((DRY)); then
    RUNTIME+=(--device cpu --cpu-crop 32 --cpu-warmup 1 --cpu-repeat 2)
    OPTIONAL=(--channels-last --batch 2)
else
    OPTIONAL=(--channels-last --cuda-graph --batch 4)
    "$PY" -c 'import tensorrt' 2>/dev/null && OPTIONAL+=(--tensorrt)  # an engine column where TensorRT is installed
fi
run_stage env "$PY" tools/gpu_report.py env "$WORK"
run_stage runtime "${RUNTIME[@]}" --arch LRSRN RT4KSR "${OPTIONAL[@]}" --out "$WORK/runtime"
if ((DRY)); then skip compile "--dry-run (torch.compile takes minutes on CPU)"
else run_stage compile "${RUNTIME[@]}" --arch LRSRN RT4KSR --compile max-autotune-no-cudagraphs --out "$WORK/compile"
fi
run_stage onnx "$PY" tools/gpu_report.py onnx "$WORK" $( ((DRY)) && echo --dry-run)
if [[ ! -f tools/bench_video.py ]]; then skip video "not present (tools/bench_video.py)"
else run_stage video "$PY" tools/bench_video.py --quick --device auto --out "$WORK/video"
fi
if ((DRY)); then skip runtime_all "--dry-run (tests/test_runtime_tool.py covers --all on CPU)"
else run_stage runtime_all "${RUNTIME[@]}" --all --exclude LRSRN RT4KSR "${OPTIONAL[@]}" --out "$WORK/runtime_all"
fi

# ---------------------------------------------------------------------------- report
echo "== report ($((SECONDS - START))s so far)"
timeout -k 5 $((RESERVE > 5 ? RESERVE : 5)) "$PY" tools/gpu_report.py report "$WORK" "$OUTDIR" ||
    echo "gpu_report: error: the report step failed; stage logs above"
echo "gpu_report: done in $((SECONDS - START))s; files in $OUTDIR:" $(cd "$OUTDIR" && ls)
