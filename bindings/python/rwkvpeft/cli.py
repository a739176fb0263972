"""``python -m rwkvpeft {train,data,eval,merge} ...`` — the command-line tools of librwkvpeft.

The sub-commands forward their arguments unchanged to the C executables ``rwkvpeft-train``,
``rwkvpeft-data``, ``rwkvpeft-eval`` and ``rwkvpeft-merge`` (so the flags are exactly theirs;
``--help`` works).
An executable is looked for in:

1. ``$RWKVPEFT_BIN_DIR``;
2. the installation the loaded library belongs to: ``<libdir>/../bin``,
   ``<libdir>/../../bin`` (multiarch lib folders) and ``<libdir>`` itself (a build tree);
3. ``$PATH``.

``python -m rwkvpeft info`` prints the library version, its path and the backends.
"""
import os
import shutil
import subprocess
import sys

TOOLS = {"train": "rwkvpeft-train", "data": "rwkvpeft-data", "eval": "rwkvpeft-eval",
         "merge": "rwkvpeft-merge"}

USAGE = """usage: python -m rwkvpeft <command> [flags...]

commands (forwarded to the C tools; flags are exactly theirs, see <command> --help):
  train   rwkvpeft-train: fine-tune with RWKV-PEFT's flags
  data    rwkvpeft-data: jsonl -> binidx, encode, decode, info
  eval    rwkvpeft-eval: loss/perplexity and generation
  merge   rwkvpeft-merge: fold an adapter into a base checkpoint (when built)
  info    library version, path and backends
"""


def find_tool(name):
    """Full path of a C tool, or None."""
    dirs = []
    env = os.environ.get("RWKVPEFT_BIN_DIR")
    if env:
        dirs.append(env)
    try:
        from . import _ffi
        libdir = os.path.dirname(_ffi.library_path())
        dirs += [os.path.join(libdir, "..", "bin"), os.path.join(libdir, "..", "..", "bin"),
                 libdir]
    except OSError:
        pass
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return os.path.normpath(p)
    return shutil.which(name)


def _info():
    from . import core
    print("librwkvpeft %s" % core.version())
    print("library: %s" % core.library_path())
    for b in core.backends():
        print("backend %-6s %s  devices %d  %s" % (
            b.name, "available  " if b.available else "unavailable", b.device_count,
            b.description))
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "info":
        return _info()
    if cmd not in TOOLS:
        sys.stderr.write("rwkvpeft: unknown command %r\n%s" % (cmd, USAGE))
        return 2
    exe = find_tool(TOOLS[cmd])
    if exe is None:
        sys.stderr.write("rwkvpeft: %s not found (set RWKVPEFT_BIN_DIR, or install the C "
                         "tools next to the library or on PATH)\n" % TOOLS[cmd])
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return subprocess.call([exe] + rest)
    except KeyboardInterrupt:
        return 130
