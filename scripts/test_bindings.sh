#!/usr/bin/env bash
# Tests installation and the language bindings against an existing Release build in build/
# (scripts/test.sh makes it):
#   1. drift check: the Python and Rust declarations against include/rwkvpeft.h
#   2. cmake --install into a temporary prefix; the installed files, RPATHs, tools, GPU
#      modules next to the library, pkg-config (compiles and runs examples/minimal.c)
#   3. Python: pip-installs bindings/python into a venv (system site packages: Debian's
#      numpy and pytest) and runs its pytest suite against the INSTALLED library
#   4. C++: examples/cpp-consumer built with find_package(rwkvpeft) against the prefix
#   5. Rust: cargo test, clippy (-D warnings) and the finetune example against the prefix
# Any failure stops the script with a non-zero status.
#   RWKVPEFT_BUILD_DIR   build folder to install from (default build)
#   RWKVPEFT_PYTHON      Python with numpy + pytest (default /usr/bin/python3, else python3)
#   RWKVPEFT_WORLD_VOCAB enables the tokenizer tests (scripts/world_vocab.sh prints it)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
build=${RWKVPEFT_BUILD_DIR:-build}
step() { printf '\n---- bindings: %s ----\n' "$*"; }
fail() { echo "test_bindings.sh: FAIL: $*" >&2; exit 1; }

if [ ! -f "$build/CMakeCache.txt" ] || ! ls "$build"/librwkvpeft.so* >/dev/null 2>&1; then
  fail "no library build in $build/ (run scripts/test.sh, or cmake -S . -B $build && cmake --build $build)"
fi
py=${RWKVPEFT_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy, pytest' 2>/dev/null; then py=/usr/bin/python3; else py=python3; fi
fi
"$py" -c 'import numpy, pytest' 2>/dev/null || fail "$py lacks numpy or pytest (scripts/deps.sh --test installs them)"
export RWKVPEFT_BACKEND=cpu PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rwkvpeft-bindings.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)

step "drift check (header vs Python _ffi vs Rust sys)"
"$py" bindings/check_drift.py -v

step "install into a temporary prefix"
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install"; }
libdir_rel=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$build/CMakeCache.txt"); libdir_rel=${libdir_rel:-lib}
case "$libdir_rel" in /*) libdir=$libdir_rel ;; *) libdir=$prefix/$libdir_rel ;; esac
for f in "$libdir/librwkvpeft.so" "$libdir/librwkvpeft.so.0" include/rwkvpeft.h bin/rwkvpeft-train bin/rwkvpeft-data \
         bin/rwkvpeft-eval "$libdir/cmake/rwkvpeft/rwkvpeftConfig.cmake" "$libdir/cmake/rwkvpeft/rwkvpeftConfigVersion.cmake" \
         "$libdir/pkgconfig/rwkvpeft.pc"; do
  case "$f" in /*) p=$f ;; *) p=$prefix/$f ;; esac
  [ -e "$p" ] || fail "not installed: ${p#"$prefix"/}"
done
for m in cuda hip; do
  if [ -f "$build/librwkvpeft_$m.so" ]; then
    [ -f "$libdir/librwkvpeft_$m.so" ] || fail "GPU module librwkvpeft_$m.so built but not installed next to the library"
    echo "GPU module installed: ${libdir#"$prefix"/}/librwkvpeft_$m.so"
  fi
done
tools=(rwkvpeft-train rwkvpeft-data rwkvpeft-eval)
if [ -x "$build/rwkvpeft-merge" ]; then
  [ -x "$prefix/bin/rwkvpeft-merge" ] || fail "rwkvpeft-merge built but not installed"
  tools+=(rwkvpeft-merge)
fi
for t in "${tools[@]}"; do
  # the tools must find the installed library (not the build tree) through their RPATH
  resolved=$(env -u LD_LIBRARY_PATH ldd "$prefix/bin/$t" | awk '/librwkvpeft\.so/ {print $3}')
  [ "$(readlink -f "$resolved")" = "$(readlink -f "$libdir/librwkvpeft.so.0")" ] ||
    fail "$t resolves librwkvpeft to '$resolved', not the installed copy"
  "$prefix/bin/$t" --help >/dev/null 2>&1 || fail "$t --help"
done
env -u LD_LIBRARY_PATH ldd "$libdir/librwkvpeft.so.0" | grep -q "not found" && fail "the installed library has unresolved dependencies"
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

step "pkg-config: examples/minimal.c against the prefix"
pcver=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --modversion rwkvpeft) || fail "pkg-config rwkvpeft"
echo "pkg-config: rwkvpeft $pcver"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror examples/minimal.c -o "$tmp/minimal" \
  $(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags --libs rwkvpeft) -Wl,-rpath,"$libdir" || fail "minimal.c via pkg-config"
(cd "$tmp" && ./minimal "$tmp/minimal-adapter.pth" >"$tmp/minimal.out" 2>&1) || { cat "$tmp/minimal.out"; fail "minimal"; }
grep -q "adapter saved" "$tmp/minimal.out" || fail "minimal did not save its adapter"
echo "ok: $(tail -n 3 "$tmp/minimal.out" | head -n 1)"

step "Python: pip install into a venv, pytest against the installed library"
"$py" -m venv --system-site-packages "$tmp/venv" || fail "python3 -m venv (install python3-venv)"
cp -r bindings/python "$tmp/pysrc"
rm -rf "$tmp/pysrc/build" "$tmp/pysrc"/*.egg-info
"$tmp/venv/bin/python" -m pip install -q --no-index --no-build-isolation --no-deps "$tmp/pysrc" ||
  fail "pip install bindings/python"
export RWKVPEFT_LIB=$libdir/librwkvpeft.so.0
(cd "$tmp" && "$tmp/venv/bin/python" - "$tmp/venv" "$libdir" <<'PY') || fail "the venv does not use the installed package and library"
import os, sys, rwkvpeft
venv, libdir = sys.argv[1], os.path.realpath(sys.argv[2])
assert os.path.realpath(rwkvpeft.__file__).startswith(os.path.realpath(venv)), rwkvpeft.__file__
assert os.path.dirname(rwkvpeft.library_path()) == libdir, rwkvpeft.library_path()
names = {b.name: b for b in rwkvpeft.backends()}
for m in ("cuda", "hip"):  # a module installed next to the library is found there
    if os.path.exists(os.path.join(libdir, "librwkvpeft_%s.so" % m)) and m in names:
        assert "cannot open shared object file" not in names[m].description or \
            os.path.join(libdir, "librwkvpeft_%s.so" % m) not in names[m].description, names[m]
print("python %s, numpy %s, rwkvpeft from %s, library %s" % (sys.version.split()[0],
      __import__("numpy").__version__, os.path.dirname(rwkvpeft.__file__), rwkvpeft.library_path()))
PY
"$tmp/venv/bin/rwkvpeft" info >/dev/null || fail "the rwkvpeft console script"
(cd "$tmp" && "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$repo/bindings/python" \
  "$repo/bindings/python/tests") || fail "Python tests"
# library lookup without $RWKVPEFT_LIB: a copy in the package folder, then the loader's path
mkdir -p "$tmp/bundled" && cp -r "$tmp/pysrc/rwkvpeft" "$tmp/bundled/" && cp -L "$libdir/librwkvpeft.so.0" "$tmp/bundled/rwkvpeft/"
(cd "$tmp" && env -u RWKVPEFT_LIB PYTHONPATH="$tmp/bundled" "$py" -c \
  "import rwkvpeft,sys; p=rwkvpeft.library_path(); sys.exit(0 if p.startswith('$tmp/bundled/rwkvpeft/') else 'bundled copy not used: '+p)") ||
  fail "lookup of the copy inside the package"
(cd "$tmp" && env -u RWKVPEFT_LIB LD_LIBRARY_PATH="$libdir" PYTHONPATH="$tmp/pysrc" "$py" -c \
  "import rwkvpeft,os,sys; p=rwkvpeft.library_path(); sys.exit(0 if os.path.dirname(p)==os.path.realpath('$libdir') else 'not the system path copy: '+p)") ||
  fail "lookup through the loader's search path"
unset RWKVPEFT_LIB

step "C++: examples/cpp-consumer with find_package(rwkvpeft) against the prefix"
cmake -S examples/cpp-consumer -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  >"$tmp/consumer.log" 2>&1 || { cat "$tmp/consumer.log"; fail "configure the C++ consumer"; }
cmake --build "$tmp/consumer" >>"$tmp/consumer.log" 2>&1 || { cat "$tmp/consumer.log"; fail "build the C++ consumer"; }
"$tmp/consumer/rwkvpeft_consumer" || fail "the C++ consumer (loss must fall)"

step "Rust: cargo test, clippy, example (against the prefix)"
if command -v cargo >/dev/null 2>&1; then
  export RWKVPEFT_LIB_DIR=$libdir
  (cd bindings/rust && cargo test --offline --quiet) || fail "cargo test"
  if cargo clippy --version >/dev/null 2>&1; then
    (cd bindings/rust && cargo clippy --offline --quiet --all-targets -- -D warnings) || fail "cargo clippy"
  else
    echo "cargo clippy is not installed: lint skipped"
  fi
  (cd bindings/rust && cargo run --offline --quiet --example finetune -- 30) || fail "Rust example finetune"
else
  echo "SKIPPED: cargo is not installed on this machine (the Rust crate is tested where it is)"
fi

echo
echo "bindings and install: all passed in $(( $(date +%s) - t0 )) s"
