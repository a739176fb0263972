"""Every error path we can provoke: RwkvpeftError carries code, status text and message."""
import numpy as np
import pytest

import rwkvpeft
from rwkvpeft import RwkvpeftError, Status
from conftest import TINY, toy_batch


def check(e, code, *words):
    err = e.value
    assert isinstance(err, RwkvpeftError)
    assert err.code == code, (err.code, err.message)
    assert err.status == rwkvpeft._ffi.lib.rwkvpeft_status_string(int(code)).decode()
    assert err.message, "no C message"
    for w in words:
        assert w in err.message, (w, err.message)
    assert err.message in str(err) and code.name in str(err)


def test_missing_checkpoint(ctx, tmp_path):
    with pytest.raises(RwkvpeftError) as e:
        ctx.load_model(tmp_path / "missing.pth")
    check(e, Status.E_IO, "missing.pth")
    assert rwkvpeft.last_error() == e.value.message


def test_malformed_checkpoint(ctx, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a zip file" * 8)
    with pytest.raises(RwkvpeftError) as e:
        ctx.load_model(bad)
    check(e, Status.E_FORMAT, "bad.pth")
    st = tmp_path / "bad.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(RwkvpeftError) as e:
        ctx.load_model(st)
    assert e.value.code in (Status.E_FORMAT, Status.E_IO)


def test_bad_adapter_files(lora_model, tmp_path):
    with pytest.raises(RwkvpeftError) as e:
        lora_model.load_adapter(tmp_path / "none.pth")
    check(e, Status.E_IO)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 30)
    with pytest.raises(RwkvpeftError) as e:
        lora_model.load_adapter(bad)
    check(e, Status.E_FORMAT)
    with pytest.raises(RwkvpeftError) as e:
        lora_model.save_adapter(tmp_path / "no" / "such" / "dir.pth")
    check(e, Status.E_IO)


def test_adapter_of_other_shape(ctx, tmp_path):
    with ctx.new_model(seed=1, **TINY) as a:
        a.attach(r=8)
        a.save_adapter(tmp_path / "r8.safetensors")
    with ctx.new_model(seed=1, **TINY) as b:
        b.attach(r=4)
        with pytest.raises(RwkvpeftError) as e:
            b.load_adapter(tmp_path / "r8.safetensors")
        check(e, Status.E_SHAPE)


def test_bad_token_ids(lora_model):
    inp, tgt = toy_batch()
    bad = inp.copy()
    bad[1, 3] = 64
    with pytest.raises(RwkvpeftError) as e:
        lora_model.evaluate(bad, tgt)
    check(e, Status.E_INVALID_ARGUMENT, "64")
    with pytest.raises(RwkvpeftError) as e:
        lora_model.logits([[1, -5]])
    check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(RwkvpeftError) as e:
        lora_model.generate([1000], 4)
    check(e, Status.E_INVALID_ARGUMENT, "1000")
    badt = tgt.copy()
    badt[0, 0] = 70
    with lora_model.trainer() as t:
        with pytest.raises(RwkvpeftError) as e:
            t.step(inp, badt)
        check(e, Status.E_INVALID_ARGUMENT, "70")
        t.step(inp, tgt)  # the trainer still works afterwards


def test_bad_token_ids_in_tokenizer(vocab_path):
    with rwkvpeft.Tokenizer(vocab_path) as tok:
        with pytest.raises(RwkvpeftError) as e:
            tok.decode([1, 2, 70000])
        check(e, Status.E_INVALID_ARGUMENT)
        with pytest.raises(RwkvpeftError) as e:
            tok.decode([-1])
        check(e, Status.E_INVALID_ARGUMENT)


def test_bad_option_values(ctx, model):
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Context("no-such-backend")
    check(e, Status.E_INVALID_ARGUMENT, "no-such-backend")
    with pytest.raises(RwkvpeftError) as e:
        ctx.new_model(n_embd=65)
    check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(RwkvpeftError) as e:
        ctx.new_model(version=4)
    check(e, Status.E_UNSUPPORTED)
    with pytest.raises(RwkvpeftError) as e:
        model.attach(r=0)
    check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(RwkvpeftError) as e:
        model.attach(method=9)
    check(e, Status.E_UNSUPPORTED)
    model.attach(r=4)
    with pytest.raises(RwkvpeftError) as e:
        model.trainer(lr_init=float("nan"))
    check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(RwkvpeftError) as e:
        model.trainer(accumulate_grad_batches=0)
    check(e, Status.E_INVALID_ARGUMENT)


def test_unknown_or_ill_typed_options(ctx, model):
    with pytest.raises(TypeError, match="no_such_option"):
        rwkvpeft.Context("cpu", no_such_option=1)
    with pytest.raises(TypeError):
        ctx.new_model(layers=3)
    with pytest.raises(TypeError):
        model.attach(rank=4)
    with pytest.raises(TypeError):
        model.attach(struct_size=4)
    with pytest.raises(ValueError):
        model.attach(r=2 ** 40)  # would be truncated silently by ctypes
    with pytest.raises(TypeError):
        model.attach(r="4")
    with pytest.raises(ValueError, match="lr_schedule"):
        model.attach(r=4) or model.trainer(lr_schedule="linear")
    with pytest.raises(ValueError, match="optimizer"):
        model.trainer(optimizer="adam_mini")
    with pytest.raises(ValueError):
        model.save("x.pth", dtype="f64")


def test_call_order_errors(model, tmp_path):
    with pytest.raises(RwkvpeftError) as e:
        model.trainer()
    check(e, Status.E_STATE, "attach")
    with pytest.raises(RwkvpeftError) as e:
        model.save_adapter(tmp_path / "a.pth")
    check(e, Status.E_STATE)
    model.attach(r=4)
    with pytest.raises(RwkvpeftError) as e:
        model.attach(r=4)
    check(e, Status.E_STATE, "already")


def test_trainer_state_of_other_shape(ctx, tmp_path):
    inp, tgt = toy_batch()
    with ctx.new_model(seed=1, **TINY) as a:
        a.attach(r=8)
        with a.trainer() as t:
            t.step(inp, tgt)
            t.save_state(tmp_path / "s.safetensors")
    with ctx.new_model(seed=1, **TINY) as b:
        b.attach(r=4)
        with b.trainer() as t:
            with pytest.raises(RwkvpeftError) as e:
                t.load_state(tmp_path / "s.safetensors")
            check(e, Status.E_SHAPE)
            with pytest.raises(RwkvpeftError) as e:
                t.load_state(tmp_path / "missing.safetensors")
            check(e, Status.E_IO)


def test_batch_shape_errors(lora_model):
    inp, tgt = toy_batch()
    with pytest.raises(ValueError):
        lora_model.evaluate(inp, tgt[:, :-1])
    with pytest.raises(ValueError):
        lora_model.evaluate(inp, tgt, loss_mask=np.ones(5))
    with pytest.raises(TypeError):
        lora_model.evaluate(inp.astype(np.float32), tgt)
    with pytest.raises(ValueError):
        lora_model.evaluate([[2 ** 40]], [[1]])
    with pytest.raises(TypeError):
        lora_model.evaluate(inp)  # no targets


def test_dataset_errors(tmp_path):
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Dataset(tmp_path / "nothing")
    check(e, Status.E_IO, "nothing")
    (tmp_path / "bad.idx").write_bytes(b"MMIDIDX\x00\x00" + b"\x01" * 40)
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Dataset(tmp_path / "bad")
    check(e, Status.E_FORMAT)
    with rwkvpeft.DatasetWriter(tmp_path / "ok", vocab_size=100) as w:
        w.add([1, 2, 3])
    with rwkvpeft.Dataset(tmp_path / "ok") as ds:
        with pytest.raises(RwkvpeftError) as e:
            ds.doc(5)
        check(e, Status.E_INVALID_ARGUMENT)
        with pytest.raises(RwkvpeftError) as e:
            ds.read(2, 10)
        check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.DatasetWriter(tmp_path / "no" / "dir" / "x", vocab_size=100)
    check(e, Status.E_IO)


def test_sampler_errors(tmp_path):
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Sampler(tmp_path / "missing", ctx_len=8, micro_bsz=1)
    check(e, Status.E_IO)
    with rwkvpeft.DatasetWriter(tmp_path / "d", vocab_size=100) as w:
        w.add(list(range(1, 50)))
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Sampler(tmp_path / "d", dataload="sideways", ctx_len=8, micro_bsz=1)
    check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Sampler(tmp_path / "d", ctx_len=0)
    check(e, Status.E_INVALID_ARGUMENT)
    s = rwkvpeft.Sampler(tmp_path / "d", ctx_len=8, micro_bsz=1, epoch_steps=3)
    with pytest.raises(RwkvpeftError) as e:
        s.position = (0, 3)
    check(e, Status.E_INVALID_ARGUMENT)
    with pytest.raises(TypeError):
        rwkvpeft.Sampler(tmp_path / "d", tokenizer="vocab.txt")


def test_bad_vocabulary(tmp_path, sample_jsonl):
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Tokenizer(tmp_path / "missing.txt")
    check(e, Status.E_IO)
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 'a' 1\n2 nonsense\n")
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.Tokenizer(bad)
    check(e, Status.E_FORMAT, ":2")
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.jsonl_to_binidx(sample_jsonl, tmp_path / "o", tmp_path / "missing.txt")
    assert e.value.code == Status.E_IO


def test_bad_jsonl(tmp_path, vocab_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(RwkvpeftError) as e:
        rwkvpeft.jsonl_to_binidx(src, tmp_path / "out", vocab_path)
    check(e, Status.E_FORMAT, "bad.jsonl:2")
    assert not (tmp_path / "out.bin").exists()


def test_non_finite_loss_mask(lora_model):
    inp, tgt = toy_batch()
    mask = np.ones(inp.shape, np.float32)
    mask[0, 0] = np.nan
    with lora_model.trainer() as t:
        with pytest.raises(RwkvpeftError) as e:
            t.step(inp, tgt, mask)
        assert e.value.code in (Status.E_INVALID_ARGUMENT, Status.E_NUMERIC)


def test_error_is_an_exception_with_fields():
    e = RwkvpeftError(-4, "file.pth: truncated")
    assert e.code is Status.E_FORMAT and e.status and e.message == "file.pth: truncated"
    assert RwkvpeftError(-77, "x").code == -77  # an unknown code stays an int
