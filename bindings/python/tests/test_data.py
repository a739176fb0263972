"""Tokenizer, datasets, jsonl conversion, samplers."""
import numpy as np
import pytest

import rwkvpeft


def test_tokenizer_round_trip(vocab_path):
    with rwkvpeft.Tokenizer(vocab_path) as tok:
        assert tok.vocab_size == 65530
        for text in ["Hello, world!", "Keeper's note: 灯塔 🌊\n", "", "a\x00b"]:
            ids = tok.encode(text)
            assert all(isinstance(i, int) for i in ids)
            assert tok.decode(ids) == text
        raw = bytes(range(256))
        assert tok.decode_bytes(tok.encode(raw)) == raw
        long = "lighthouse " * 500
        assert tok.decode(np.array(tok.encode(long))) == long
        assert tok.encode("\n\n") != [] and tok.decode([0]) == ""


def test_tokenizer_shared_between_threads(vocab_path):
    import threading
    tok = rwkvpeft.Tokenizer(vocab_path)
    out = []
    ths = [threading.Thread(target=lambda: out.append(tok.encode("the sea was grey " * 50)))
           for _ in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert len(out) == 4 and all(o == out[0] for o in out)
    tok.close()


def test_dataset_writer_and_reader(tmp_path):
    prefix = str(tmp_path / "d")
    docs = [[1, 2, 3], list(range(10, 60)), [7]]
    with rwkvpeft.DatasetWriter(prefix, vocab_size=100) as w:
        for d in docs:
            w.add(d)
        w.add(np.array([5, 6], dtype=np.int64))
    with rwkvpeft.Dataset(prefix) as ds:
        assert len(ds) == 4 and ds.num_tokens == 3 + 50 + 1 + 2
        assert ds.doc(1) == (3, 50)
        assert [d.tolist() for d in ds] == docs + [[5, 6]]
        assert ds[-1].tolist() == [5, 6]
        assert ds.read(2, 3).tolist() == [3, 10, 11]


def test_dataset_writer_discards_on_error(tmp_path):
    prefix = tmp_path / "partial"
    with pytest.raises(RuntimeError):
        with rwkvpeft.DatasetWriter(prefix, vocab_size=100) as w:
            w.add([1, 2, 3])
            raise RuntimeError("stop")
    assert not (tmp_path / "partial.bin").exists() and not (tmp_path / "partial.idx").exists()


def test_sampler_from_binidx(tmp_path, lora_model):
    prefix = str(tmp_path / "s")
    rng = np.random.default_rng(0)
    with rwkvpeft.DatasetWriter(prefix, vocab_size=64) as w:
        for _ in range(8):
            w.add(rng.integers(1, 64, size=40))
    s = rwkvpeft.Sampler(prefix, ctx_len=16, micro_bsz=2, epoch_steps=5, seed=3)
    info = s.info
    assert (info.n_docs, info.n_tokens, info.epoch_steps, info.ctx_len, info.micro_bsz) == \
        (8, 320, 5, 16, 2)
    assert s.position == (0, 0)
    b = next(s)
    assert b.inputs.shape == (2, 16) and b.targets.shape == (2, 16) and b.mask.shape == (2, 16)
    np.testing.assert_array_equal(b.inputs[:, 1:], b.targets[:, :-1])
    assert s.position == (0, 1)
    saved = s.position
    after = [next(s) for _ in range(6)]
    assert s.position == (1, 2)
    s.position = saved
    again = [s.next_batch() for _ in range(6)]
    for x, y in zip(after, again):
        np.testing.assert_array_equal(x.inputs, y.inputs)
    with lora_model.trainer() as t:
        r = t.step(next(s))
        assert np.isfinite(r.loss)
    s.close()


def test_jsonl_and_sampler_with_tokenizer(tmp_path, vocab_path, sample_jsonl):
    seen = []
    n_docs, n_skipped = rwkvpeft.jsonl_to_binidx(
        sample_jsonl, tmp_path / "keeper", vocab_path,
        progress=lambda done, total, docs: seen.append((done, total, docs)))
    assert (n_docs, n_skipped) == (12, 0)
    assert seen and seen[-1][0] == seen[-1][1]
    with rwkvpeft.Dataset(tmp_path / "keeper") as ds:
        assert len(ds) == 12 and ds[0][-1] == 0  # end-of-document token appended
        with rwkvpeft.Tokenizer(vocab_path) as tok:
            assert tok.decode(ds[0][:-1]).startswith("Keeper's note, first morning.")
    tok = rwkvpeft.Tokenizer(vocab_path)
    s = rwkvpeft.Sampler(sample_jsonl, data_type="jsonl", tokenizer=tok, ctx_len=32, micro_bsz=3)
    del tok  # the sampler keeps it alive
    b = s.next_batch()
    assert b.inputs.shape == (3, 32) and s.info.n_docs == 12
    s.close()


def test_jsonl_progress_cancel_and_exception(tmp_path, vocab_path, sample_jsonl):
    with pytest.raises(rwkvpeft.RwkvpeftError) as e:
        rwkvpeft.jsonl_to_binidx(sample_jsonl, tmp_path / "c", vocab_path,
                                 progress=lambda *a: True)
    assert e.value.code == rwkvpeft.Status.E_STATE

    def boom(*a):
        raise KeyError("from the callback")
    with pytest.raises(KeyError):
        rwkvpeft.jsonl_to_binidx(sample_jsonl, tmp_path / "c", vocab_path, progress=boom)
    assert not (tmp_path / "c.bin").exists()
