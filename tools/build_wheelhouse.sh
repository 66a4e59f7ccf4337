#!/usr/bin/env bash
# Build the offline wheelhouse that tools/gpu_report.sh installs on the accelerator machine.
#
#     bash tools/build_wheelhouse.sh [DIR]        # default DIR: wheelhouse/ (git-ignored); `make wheelhouse`
#
# Run it with the project's environment active (its pip and its installed versions are used).
# DIR/py3.12/ holds, for the accelerator (CPython 3.12, manylinux x86_64), the wheels of what that
# machine lacks: basicsr 1.4.2 (sdist-only on PyPI: built here with --no-deps against the installed
# torch), lmdb, av, addict, yapf (+ platformdirs), PyYAML, tqdm, safetensors, matplotlib and the
# modules it imports, onnx (+ ml_dtypes), and this package's own wheel; DIR/py3.X/ holds the same
# for the local Python (to prove the offline install here, see tools/accelerator_venv.py).
# Versions are the ones installed in the current environment (the tested ones). Wheels with a
# pure-Python build are taken pure (fonttools: 1.2 MB instead of 5.4 MB). Only DIR/py3.12 travels
# with the repository (run's carry); the script prints its size with the repository's and fails
# when they exceed the 64 MiB that reach the accelerator.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$ROOT/wheelhouse}
PY=${PYTHON:-python}
ACCELERATOR_PYTHON=3.12
LIMIT_MIB=64
# imported by rtsr_arch/basicsr and absent from the accelerator (it has torch, torchvision, triton,
# onnxruntime, opencv, scikit-image, numpy, scipy, pillow and what those require)
BINARY=(lmdb av PyYAML safetensors matplotlib contourpy kiwisolver onnx ml_dtypes)
PURE=(addict yapf platformdirs tqdm fonttools pyparsing cycler python-dateutil)
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)

pins() {  # name==installed version, for each name
    "$PY" - "$@" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f'{name}=={md.version(name)}')
    except md.PackageNotFoundError:
        sys.exit(f'build_wheelhouse: error: {name} is not installed in {sys.prefix}; install the project first')
EOF
}

local_python=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
binary=$(pins "${BINARY[@]}")
pure=$(pins "${PURE[@]}")
mkdir -p "$DIR"
work=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "building basicsr 1.4.2 and rtsr_arch wheels (--no-deps)"
if ! "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/own" basicsr==1.4.2 "$ROOT" 2>"$work/log"; then
    cat "$work/log" >&2
    exit 1
fi

for version in $(printf '%s\n' "$ACCELERATOR_PYTHON" "$local_python" | sort -u); do
    echo "downloading wheels for CPython $version"
    dest="$work/py$version"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" "${PLATFORMS[@]}" \
        -d "$dest" $binary
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --platform any \
        -d "$dest" $pure
    cp "$work"/own/*.whl "$dest"/
    rm -rf "$DIR/py$version"
    mv "$dest" "$DIR/py$version"
done

mib() { echo "scale=1; $1 / 1048576" | bc; }
bytes() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
for folder in "$DIR"/py*/; do
    echo "$(basename "$folder"): $(ls "$folder" | wc -l) wheels, $(mib "$(bytes "$folder")") MiB"
done
carry=$(bytes "$DIR/py$ACCELERATOR_PYTHON")
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then  # what run copies: tracked + untracked, not ignored
    repo=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
else
    repo=$(du -sb --exclude=.git --exclude=wheelhouse --exclude=.venv --exclude=build "$ROOT" | cut -f1)
fi
total=$((carry + repo))
echo "to carry: $(mib "$carry") MiB (${DIR#"$ROOT"/}/py$ACCELERATOR_PYTHON) + $(mib "$repo") MiB (repository)" \
     "= $(mib "$total") MiB of $LIMIT_MIB MiB"
if ((total > LIMIT_MIB * 1048576)); then
    echo "build_wheelhouse: error: the wheelhouse and the repository exceed $LIMIT_MIB MiB" >&2
    exit 1
fi
