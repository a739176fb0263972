"""Shared fixtures. Runs against the installed `rwkvpeft` package when importable, else the
source tree next to this folder; the library is found as the package finds it
($RWKVPEFT_LIB, ...), with the repository's build/ as a last resort for development."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

try:
    import rwkvpeft  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(HERE))
    import rwkvpeft  # noqa: F401

from rwkvpeft import _ffi  # noqa: E402

try:
    _ffi.load()
except OSError:
    dev = os.path.join(REPO, "build", "librwkvpeft.so.0")
    if "RWKVPEFT_LIB" in os.environ or not os.path.exists(dev):
        raise
    os.environ["RWKVPEFT_LIB"] = dev
    _ffi.load()

# the CLI tests forward to C tools; a build tree keeps them next to the library
os.environ.setdefault("RWKVPEFT_BACKEND", "cpu")


def pytest_report_header(config):
    import numpy
    return ["rwkvpeft package: %s" % os.path.dirname(rwkvpeft.__file__),
            "librwkvpeft: %s (%s)" % (rwkvpeft.library_path(), rwkvpeft.version()),
            "numpy %s" % numpy.__version__]


TINY = dict(n_layer=2, n_embd=64, head_size=32, vocab_size=64)


@pytest.fixture
def ctx():
    # one thread: the tiny models of these tests gain nothing from more, and OpenMP barriers
    # on a loaded 2-core machine cost 30x
    with rwkvpeft.Context("cpu", log_level=-1, n_threads=1) as c:
        yield c


@pytest.fixture
def model(ctx):
    with ctx.new_model(seed=1234, **TINY) as m:
        yield m


@pytest.fixture
def lora_model(model):
    model.attach(r=4, alpha=8, dropout=0)
    return model


def toy_batch(B=2, T=16, vocab=64):
    import numpy as np
    inp = ((np.arange(B * T) * 3) % (vocab - 1)).reshape(B, T).astype(np.int32)
    return inp, inp + 1


@pytest.fixture
def vocab_path():
    v = os.environ.get("RWKVPEFT_WORLD_VOCAB")
    if not v or not os.path.isfile(v):
        pytest.skip("RWKVPEFT_WORLD_VOCAB is not set (scripts/world_vocab.sh prints it)")
    return v


@pytest.fixture
def sample_jsonl():
    return os.path.join(REPO, "data", "sample", "keeper_notes.jsonl")
