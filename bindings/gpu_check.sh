#!/usr/bin/env bash
# bindings/gpu_check.sh — the bindings on the GPU machine (H200: Ubuntu, Python 3.12 with
# numpy 2.x and pytest, CUDA; no cargo, no apt): builds the library with the CUDA module,
# installs it into a prefix, runs the Python suite against the installed library (numpy 2.x;
# its GPU test trains on CUDA with the module found next to the installed library) and the
# C++ consumer. Prepare on the development machine (as for bench/gpu_check.sh):
#     bench/gpu_ops_check.sh --prepare-carry
#     mkdir -p .carry/vocab && cp "$(scripts/world_vocab.sh)" .carry/vocab/
# then: run(command="bash bindings/gpu_check.sh", carry=[".carry/deps", ".carry/vocab"])
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/out/bindings_gpu}
B=${BUILD_DIR:-/tmp/rwkvpeft-bind-gpu}
carry=$root/.carry/deps
ma=x86_64-linux-gnu
mkdir -p "$out" "$B/pc" "$B/bin" "$B/rt"
export PATH=/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 NCCL_NVLS_ENABLE=0
summary=$out/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
t0=$(date +%s)

# dependencies the image may lack: pkg-config, libcjson, zlib headers (carried .debs)
extra=()
if [[ -d $carry/usr ]]; then
  if ! command -v pkg-config >/dev/null; then
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$carry/usr/lib/$ma" "$carry/usr/bin/pkgconf" >"$B/bin/pkg-config"
    chmod +x "$B/bin/pkg-config"; export PATH=$B/bin:$PATH
  fi
  if ! pkg-config --exists libcjson 2>/dev/null; then
    sed -e "s|=/usr|=$carry/usr|g" "$carry/usr/lib/$ma/pkgconfig/libcjson.pc" >"$B/pc/libcjson.pc"
    ln -sf "$carry/usr/lib/$ma/libcjson.so.1" "$B/rt/libcjson.so.1"
    export PKG_CONFIG_PATH=$B/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  fi
  if [[ ! -f /usr/include/zlib.h ]]; then
    for z in /lib/$ma/libz.so.1 /usr/lib/$ma/libz.so.1; do [[ -f $z ]] && break; done
    extra+=(-DZLIB_INCLUDE_DIR="$carry/usr/include" -DZLIB_LIBRARY="$z")
  fi
fi
export LD_LIBRARY_PATH=$B/rt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[[ -f $root/.carry/vocab/rwkv_vocab_v20230424.txt ]] && export RWKVPEFT_WORLD_VOCAB=$root/.carry/vocab/rwkv_vocab_v20230424.txt

{ cmake -S "$root" -B "$B/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKVPEFT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DBUILD_TESTING=OFF "${extra[@]}" &&
  timeout 400 cmake --build "$B/build" -j"$(nproc)" --target rwkvpeft rwkvpeft_cuda rwkvpeft-train rwkvpeft-data rwkvpeft-eval &&
  cmake --install "$B/build" --prefix "$B/prefix"; } >"$out/build.log" 2>&1
rc=$?
say "build + install: rc $rc after $(( $(date +%s) - t0 )) s"
((rc == 0)) || { tail -30 "$out/build.log" | tee -a "$summary"; exit 1; }
ls -l "$B/prefix/lib" >>"$summary"

export RWKVPEFT_LIB=$B/prefix/lib/librwkvpeft.so.0
python3 -c "import numpy, pytest, sys; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'pytest', pytest.__version__)" | tee -a "$summary"
PYTHONPATH=$root/bindings/python python3 -m rwkvpeft info 2>&1 | tee -a "$summary"
(cd "$B" && PYTHONPATH=$root/bindings/python timeout 400 python3 -m pytest -q -p no:cacheprovider -rs \
    --rootdir "$root/bindings/python" "$root/bindings/python/tests") >"$out/pytest.log" 2>&1
say "pytest: rc $? — $(tail -1 "$out/pytest.log")"
grep -E "^(SKIPPED|FAILED|ERROR)" "$out/pytest.log" | head -20 | tee -a "$summary"

{ cmake -S "$root/examples/cpp-consumer" -B "$B/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$B/prefix" &&
  cmake --build "$B/consumer" && "$B/consumer/rwkvpeft_consumer"; } >"$out/consumer.log" 2>&1
say "C++ consumer: rc $? — $(tail -1 "$out/consumer.log")"
say "total $(( $(date +%s) - t0 )) s"
