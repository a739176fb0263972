#!/usr/bin/env python3
"""sbs_table.py — the side-by-side table of bench/side_by_side.sh.

    sbs_table.py CONFIGS_TXT RECORDS_JSONL [--header TEXT]... > table.md

CONFIGS_TXT: one selected config a line, "id ver method layers embd bsz ctx chunk warmup steps est_s".
RECORDS_JSONL: the raw records, reference ("impl": "rwkv-peft") and ours ("impl": "librwkvpeft",
with "mode" full/truncated for infctx rows), each with "config" = id.
Speed ratio = ours tokens/s / reference tokens/s (> 1: we are faster); memory ratio = ours GiB /
reference GiB (< 1: we use less). Reference GiB = torch.cuda.max_memory_allocated; ours = device
memory in use above the empty context at its peak (cudaMemGetInfo), which also counts cuBLAS
workspaces and our scratch, so the memory comparison is conservative for us.
"""
import json
import sys

SIZES = {(12, 768): "0.1B", (24, 1024): "0.4B", (24, 2048): "1.6B", (32, 2560): "3B", (32, 4096): "7B"}


def size_name(ver, L, C):
    s = SIZES.get((L, C))
    if ver == 7 and s:
        s = {"1.6B": "1.5B", "3B": "2.9B"}.get(s, s)
    return s or "L%dC%d" % (L, C)


def fmt(x, nd=0):
    if x is None:
        return "—"
    return ("{:,.%df}" % nd).format(x)


def short_err(e):
    e = (e or "").replace("|", "/").replace("\n", " ")
    return e[:110] + ("…" if len(e) > 110 else "")


def main():
    cfg_path, rec_path = sys.argv[1], sys.argv[2]
    headers = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--header"]
    configs = []
    for line in open(cfg_path):
        f = line.split()
        if len(f) >= 10 and not f[0].startswith("#"):
            configs.append(dict(id=f[0], ver=int(f[1]), method=f[2], L=int(f[3]), C=int(f[4]), B=int(f[5]),
                                T=int(f[6]), chunk=int(f[7]), warm=int(f[8]), steps=int(f[9])))
    ref, ours = {}, {}
    try:
        lines = open(rec_path).read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("impl") == "rwkv-peft":
            ref[r.get("config")] = r
        else:
            ours[(r.get("config"), r.get("mode", ""))] = r
    for h in headers:
        print(h)
    print()
    print("| config | ref tok/s | ours tok/s | speed ratio | ref GiB | ours GiB | memory ratio | ref step ms | ours step ms | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in configs:
        modes = ["full", "truncated"] if c["chunk"] else [""]
        r = ref.get(c["id"])
        for m in modes:
            o = ours.get((c["id"], m))
            label = "v%d %s %s B%d T%d" % (c["ver"], "LoRA" if c["method"] == "lora" else "state",
                                         size_name(c["ver"], c["L"], c["C"]), c["B"], c["T"])
            if c["chunk"]:
                label += " infctx chunk %d (ours %s)" % (c["chunk"], m)
            rt = r.get("tokens_per_s") if r and not r.get("error") else None
            ot = o.get("tokens_per_s") if o and not o.get("error") else None
            rg = r.get("peak_gib") if r and not r.get("error") else None
            og = o.get("peak_gib") if o and not o.get("error") else None
            rs = r.get("step_ms") if r and not r.get("error") else None
            os_ = o.get("median_ms") if o and not o.get("error") else None
            notes = []
            if r is None:
                notes.append("ref: not run")
            elif r.get("error"):
                notes.append("ref: " + short_err(r["error"]))
            if r and r.get("warning"):
                notes.append("ref warning: " + short_err(r["warning"]))
            if r and rg and r.get("device_used_gib", 0) > max(2 * rg, rg + 4):
                notes.append("ref device memory in use %.1f GiB (cudaMemGetInfo; their kernel's local memory)"
                             % r["device_used_gib"])
            if o is None:
                notes.append("ours: not run")
            elif o.get("error"):
                notes.append("ours: " + short_err(o["error"]))
            steps = "%d+%d steps" % (c["warm"], c["steps"])
            if c["steps"] < 10:
                notes.append(steps)
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, fmt(rt), fmt(ot), ("**%.2f×**" % (ot / rt)) if rt and ot else "—",
                fmt(rg, 2), fmt(og, 2), ("%.2f×" % (og / rg)) if rg and og else "—",
                fmt(rs, 1), fmt(os_, 1), "; ".join(notes)))
    print()
    print("speed ratio = ours tokens/s ÷ reference tokens/s (> 1: librwkvpeft faster); memory ratio = ours GiB ÷ "
          "reference GiB (< 1: librwkvpeft smaller). Reference GiB = torch.cuda.max_memory_allocated (PyTorch "
          "tensors only); ours = device memory in use above the empty context at its peak (cudaMemGetInfo: also "
          "cuBLAS workspaces and scratch). Reference infctx rows: their train_type infctx (truncated: states "
          "detached between chunks), the same figure in both of our rows.")


if __name__ == "__main__":
    main()
