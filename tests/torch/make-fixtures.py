#!/usr/bin/python3
"""Regenerate tests/torch/fixtures: tiny fairseq-shaped checkpoints written by torch.save and
the reference log-probabilities moelm's converted models must reproduce.

Run with Debian's Python and PyTorch (apt-get install python3-torch; python3-omegaconf too to
remake fixtures/omegaconf, where cfg is pickled as an omegaconf DictConfig):

    /usr/bin/python3 tests/torch/make-fixtures.py tests/torch/fixtures

The checkpoints have the structures fairseq writes: a `cfg` dict (cfg.model as a dict) or the
legacy `args` Namespace, `extra_state` with meters of fairseq-named classes (registered here
under fairseq's module names, so the pickle names them as fairseq's would), fp16 tensors, the
buffers fairseq keeps in its state dict (decoder.version, embed_positions._float_tensor) and a
2-shard MoE (model-shared.pt + model-rank-R.pt with rank-local expert numbers).

The reference forward below is written from moelm's design notes (fairseq's transformer_lm:
scaled embeddings, sinusoidal or learned positions from 2, pre-norm layers, q scaled after
its bias, causal attention, GELU (erf) or ReLU, a final LayerNorm, tied or separate output
projection; top-2 MoE layers without drops) in float64, independently of moelm's C code.
"""
import argparse
import collections
import io
import pickle
import struct
import zipfile
import math
import os
import shutil
import sys
import types

import torch

PAD, EOS = 1, 2


# ---- fairseq's classes, as the pickle will name them ---------------------------------------
def fake_module(name):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
    return sys.modules[name]


meters = fake_module("fairseq.logging.meters")


class AverageMeter:
    def __init__(self, val, n):
        self.val, self.sum, self.count, self.round = val, val * n, n, None


class TimeMeter:
    def __init__(self):
        self.init, self.n, self.i, self.round = 0.0, 12, 0, None


class StopwatchMeter:
    def __init__(self):
        self.sum, self.n, self.start_time, self.round = 4.5, 3, None, None


class MetersDict(collections.OrderedDict):
    pass


for cls in (AverageMeter, TimeMeter, StopwatchMeter, MetersDict):
    cls.__module__ = "fairseq.logging.meters"
    setattr(meters, cls.__name__, cls)


def extra_state():
    m = MetersDict()
    m["loss"] = AverageMeter(3.25, 7)
    m["wps"] = TimeMeter()
    m["wall"] = StopwatchMeter()
    return {
        "epoch": 3,
        "val_loss": 3.1,
        "best": 2.9,
        "metrics": {"train": [("loss", m)], "default": MetersDict()},
        "previous_training_time": 12.5,
        "train_iterator": {"epoch": 3, "iterations_in_epoch": 0, "shuffle": True},
    }


# ---- parameters ----------------------------------------------------------------------------
def make_params(gen, V, C, F, L, learned_pos, max_pos, share, moe=None):
    """fairseq's state dict names; moe = (freq, experts) or None."""
    sd = collections.OrderedDict()

    def rnd(*shape, scale=0.3):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    emb = rnd(V, C, scale=0.5)
    emb[PAD] = 0
    sd["decoder.embed_tokens.weight"] = emb
    if learned_pos:
        pos = rnd(max_pos + PAD + 1, C, scale=0.2)
        pos[PAD] = 0
        sd["decoder.embed_positions.weight"] = pos
    else:
        sd["decoder.embed_positions._float_tensor"] = torch.zeros(1)  # a buffer fairseq saves
    for l in range(L):
        p = "decoder.layers.%d." % l
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            sd[p + "self_attn.%s.weight" % proj] = rnd(C, C)
            sd[p + "self_attn.%s.bias" % proj] = rnd(C, scale=0.1)
        sd[p + "self_attn_layer_norm.weight"] = 1 + rnd(C, scale=0.1)
        sd[p + "self_attn_layer_norm.bias"] = rnd(C, scale=0.1)
        if moe and (l + 1) % moe[0] == 0:
            sd[p + "moe_layer.gate.wg.weight"] = rnd(moe[1], C, scale=0.8)
            for e in range(moe[1]):
                q = p + "moe_layer.experts.%d." % e
                sd[q + "fc1.weight"] = rnd(F, C)
                sd[q + "fc1.bias"] = rnd(F, scale=0.1)
                sd[q + "fc2.weight"] = rnd(C, F)
                sd[q + "fc2.bias"] = rnd(C, scale=0.1)
        else:
            sd[p + "fc1.weight"] = rnd(F, C)
            sd[p + "fc1.bias"] = rnd(F, scale=0.1)
            sd[p + "fc2.weight"] = rnd(C, F)
            sd[p + "fc2.bias"] = rnd(C, scale=0.1)
        sd[p + "final_layer_norm.weight"] = 1 + rnd(C, scale=0.1)
        sd[p + "final_layer_norm.bias"] = rnd(C, scale=0.1)
    sd["decoder.layer_norm.weight"] = 1 + rnd(C, scale=0.1)
    sd["decoder.layer_norm.bias"] = rnd(C, scale=0.1)
    sd["decoder.output_projection.weight"] = emb if share else rnd(V, C, scale=0.5)
    sd["decoder.version"] = torch.tensor([3.0])
    return sd


# ---- the reference forward (float64) -------------------------------------------------------
def sinusoidal(num, C):
    half = C // 2
    k = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float64) * -k)
    ang = torch.arange(num, dtype=torch.float64)[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if C % 2:
        table = torch.cat([table, torch.zeros(num, 1, dtype=torch.float64)], dim=1)
    table[PAD] = 0
    return table


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def act(x, name):
    if name == "relu":
        return torch.relu(x)
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def ffn(h, sd, p, actname):
    return act(h @ sd[p + "fc1.weight"].T + sd[p + "fc1.bias"], actname) @ sd[p + "fc2.weight"].T + sd[p + "fc2.bias"]


def moe_ffn(h, sd, p, E, actname):
    """fairseq's Top2Gate at evaluation without drops: the two largest gate probabilities,
    renormalised over the pair."""
    gates = torch.softmax(h @ sd[p + "moe_layer.gate.wg.weight"].T, dim=-1)  # (T,E)
    out = torch.zeros_like(h)
    for t in range(h.shape[0]):
        order = sorted(range(E), key=lambda e: (-gates[t, e].item(), e))
        e1, e2 = order[0], order[1]
        g1, g2 = gates[t, e1], gates[t, e2]
        for e, g in ((e1, g1 / (g1 + g2)), (e2, g2 / (g1 + g2))):
            out[t] += g * ffn(h[t:t + 1], sd, p + "moe_layer.experts.%d." % e, actname)[0]
    return out


def forward(sd, m, src):
    """log p(next | prefix) for every position: (T, V)."""
    sd = {k: v.double() for k, v in sd.items()}
    C, H = m["embed_dim"], m["heads"]
    T = len(src)
    x = sd["decoder.embed_tokens.weight"][src] * math.sqrt(C)
    positions = torch.arange(T) + PAD + 1
    if m["learned_pos"]:
        x = x + sd["decoder.embed_positions.weight"][positions]
    else:
        x = x + sinusoidal(m["max_positions"] + PAD + 1, C)[positions]
    hd = C // H
    causal = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), diagonal=1)
    for l in range(m["layers"]):
        p = "decoder.layers.%d." % l
        h = layer_norm(x, sd[p + "self_attn_layer_norm.weight"], sd[p + "self_attn_layer_norm.bias"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].T + sd[p + "self_attn.q_proj.bias"]) * hd ** -0.5
        k = h @ sd[p + "self_attn.k_proj.weight"].T + sd[p + "self_attn.k_proj.bias"]
        v = h @ sd[p + "self_attn.v_proj.weight"].T + sd[p + "self_attn.v_proj.bias"]
        q, k, v = (z.view(T, H, hd).transpose(0, 1) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(1, 2) + causal, dim=-1) @ v  # (H,T,hd)
        att = att.transpose(0, 1).reshape(T, C)
        x = x + att @ sd[p + "self_attn.out_proj.weight"].T + sd[p + "self_attn.out_proj.bias"]
        h = layer_norm(x, sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"])
        if m.get("moe") and (l + 1) % m["moe"][0] == 0:
            x = x + moe_ffn(h, sd, p, m["moe"][1], m["act"])
        else:
            x = x + ffn(h, sd, p, m["act"])
    x = layer_norm(x, sd["decoder.layer_norm.weight"], sd["decoder.layer_norm.bias"])
    out = sd["decoder.embed_tokens.weight"] if m["share"] else sd["decoder.output_projection.weight"]
    return torch.log_softmax(x @ out.T, dim=-1)


# ---- checkpoints ---------------------------------------------------------------------------
def cfg_dict(m, arch, V):
    model = {
        "_name": arch, "activation_fn": m["act"], "dropout": 0.1, "attention_dropout": 0.1,
        "activation_dropout": 0.0, "relu_dropout": 0.0, "decoder_embed_dim": m["embed_dim"],
        "decoder_output_dim": m["embed_dim"], "decoder_input_dim": m["embed_dim"],
        "decoder_ffn_embed_dim": m["ffn_dim"], "decoder_layers": m["layers"],
        "decoder_attention_heads": m["heads"], "decoder_normalize_before": True,
        "no_decoder_final_norm": False, "adaptive_softmax_cutoff": None, "adaptive_softmax_dropout": 0.0,
        "no_token_positional_embeddings": False, "share_decoder_input_output_embed": m["share"],
        "character_embeddings": False, "adaptive_input": False, "decoder_learned_pos": m["learned_pos"],
        "layernorm_embedding": False, "no_scale_embedding": False, "checkpoint_activations": False,
        "decoder_layerdrop": 0.0, "decoder_layers_to_keep": None, "quant_noise_pq": 0.0,
        "add_bos_token": False, "tokens_per_sample": m["tokens_per_sample"],
        "max_target_positions": m["max_positions"], "tpu": False, "fp16": True,
    }
    if m.get("moe"):
        model.update({
            "moe_freq": m["moe"][0], "moe_expert_count": m["moe"][1], "moe_gating_use_fp32": True,
            "moe_second_expert_policy": "all", "moe_normalize_gate_prob_before_dropping": False,
            "moe_expert_ffn_dim": None, "moe_top1_expert": False, "moe_eval_capacity_token_fraction": 1.0,
            "moe_normalize_expert_grad": "sqrt_world_size", "use_moe_pad_mask": False,
        })
    return {
        "_name": None,
        "common": {"_name": None, "seed": 1, "fp16": True, "log_interval": 100},
        "distributed_training": {"_name": None, "distributed_world_size": 2, "ddp_backend": "fully_sharded"},
        "model": model,
        "task": {"_name": "language_modeling", "data": "/data/wiki", "sample_break_mode": "none",
                 "tokens_per_sample": m["tokens_per_sample"], "output_dictionary_size": -1,
                 "self_target": False, "add_bos_token": False, "max_target_positions": None},
        "criterion": {"_name": "cross_entropy", "sentence_avg": False},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9, 0.98)", "lr": [0.0005]},
        "lr_scheduler": {"_name": "inverse_sqrt", "warmup_updates": 4000},
        "bpe": {"_name": "gpt2", "gpt2_encoder_json": "encoder.json", "gpt2_vocab_bpe": "vocab.bpe"},
    }


def state(sd, cfg=None, args=None):
    return {
        "args": args,
        "cfg": cfg,
        "model": sd,
        "criterion": collections.OrderedDict(),
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": 2.9}, "num_updates": 120}],
        "task_state": {},
        "extra_state": extra_state(),
        "last_optimizer_state": {"state": {}, "param_groups": [{"lr": 0.0005, "betas": (0.9, 0.98)}]},
    }


def reference_rows(name, sd, m, gen, V, lines):
    for s in range(4):
        n = 6 + 3 * s
        toks = [int(t) for t in torch.randint(3, V, (n,), generator=gen)]
        toks[n // 2] = EOS  # a newline replaced by </s> inside a row
        src = [EOS] + toks[:-1]
        lp = forward(sd, m, src)
        scores = [lp[i, toks[i]].item() for i in range(n)]
        lines.append("%s\t%d\t%s\t%s" % (name, s, " ".join(map(str, toks)), " ".join("%.10g" % v for v in scores)))


def write(path, obj):
    torch.save(obj, path)
    print("wrote", path, os.path.getsize(path), "bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    out = ap.parse_args().outdir
    with open(os.path.join(out, "dict.txt")) as f:
        V = 4 + sum(1 for _ in f)
    gen = torch.Generator().manual_seed(13)
    lines = []

    # 1. cfg dict, fp32, tied embeddings, sinusoidal positions, GELU.
    m = dict(embed_dim=16, ffn_dim=32, layers=2, heads=2, act="gelu", share=True, learned_pos=False,
             max_positions=40, tokens_per_sample=40)
    sd = make_params(gen, V, 16, 32, 2, False, 40, True)
    os.makedirs(os.path.join(out, "dense"), exist_ok=True)
    write(os.path.join(out, "dense", "model.pt"),
          state(collections.OrderedDict((k, v.float()) for k, v in sd.items()), cfg=cfg_dict(m, "transformer_lm_gpt", V)))
    reference_rows("dense", {k: v.float() for k, v in sd.items()}, m, gen, V, lines)
    try:  # the same model with cfg pickled as an omegaconf DictConfig (optional: python3-omegaconf)
        from omegaconf import OmegaConf
        os.makedirs(os.path.join(out, "omegaconf"), exist_ok=True)
        write(os.path.join(out, "omegaconf", "model.pt"),
              state(collections.OrderedDict((k, v.float()) for k, v in sd.items()),
                    cfg=OmegaConf.create(cfg_dict(m, "transformer_lm_gpt", V))))
        shutil.copy(os.path.join(out, "dict.txt"), os.path.join(out, "omegaconf", "dict.txt"))
    except ImportError:
        print("omegaconf not installed: fixtures/omegaconf left as it is")

    # 2. legacy args Namespace, fp16, separate output projection, learned positions, ReLU.
    m = dict(embed_dim=24, ffn_dim=40, layers=2, heads=3, act="relu", share=False, learned_pos=True,
             max_positions=32, tokens_per_sample=32)
    sd = make_params(gen, V, 24, 40, 2, True, 32, False)
    sd16 = collections.OrderedDict((k, v.half()) for k, v in sd.items())
    args = argparse.Namespace(
        arch="transformer_lm", task="language_modeling", criterion="cross_entropy", data="/data/wiki",
        decoder_embed_dim=24, decoder_ffn_embed_dim=40, decoder_layers=2, decoder_attention_heads=3,
        decoder_learned_pos=True, share_decoder_input_output_embed=False, activation_fn="relu",
        decoder_normalize_before=True, no_decoder_final_norm=False, no_scale_embedding=False,
        tokens_per_sample=32, max_target_positions=32, sample_break_mode="eos", dropout=0.1,
        attention_dropout=0.0, activation_dropout=0.0, adaptive_softmax_cutoff=None, adaptive_input=False,
        character_embeddings=False, layernorm_embedding=False, decoder_input_dim=24, decoder_output_dim=24,
        fp16=True, seed=1, optimizer="adam", lr=[0.0005])
    os.makedirs(os.path.join(out, "legacy"), exist_ok=True)
    write(os.path.join(out, "legacy", "model.pt"), state(sd16, args=args))
    reference_rows("legacy", sd16, m, gen, V, lines)

    # 3. MoE: 2 layers, layer 1 is top-2 over 4 experts, saved as a shared file + 2 rank files.
    m = dict(embed_dim=16, ffn_dim=24, layers=2, heads=2, act="gelu", share=True, learned_pos=False,
             max_positions=40, tokens_per_sample=40, moe=(2, 4))
    sd = make_params(gen, V, 16, 24, 2, False, 40, True, moe=(2, 4))
    sd = collections.OrderedDict((k, v.float()) for k, v in sd.items())
    cfg = cfg_dict(m, "transformer_lm_gpt", V)
    shared = collections.OrderedDict((k, v) for k, v in sd.items() if ".experts." not in k)
    d = os.path.join(out, "moe")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "model-shared.pt"), state(shared, cfg=cfg))
    for r in range(2):
        local = collections.OrderedDict()
        for k, v in sd.items():
            if ".experts." in k:
                pre, rest = k.split(".experts.")
                e, tail = rest.split(".", 1)
                if int(e) // 2 == r:
                    local["%s.experts.%d.%s" % (pre, int(e) % 2, tail)] = v
        write(os.path.join(d, "model-rank-%d.pt" % r), state(local, cfg=cfg))
    reference_rows("moe", sd, m, gen, V, lines)

    with open(os.path.join(out, "reference.tsv"), "w") as f:
        f.write("# model\trow\ttargets (the source is </s> then the targets but the last)\t"
                "natural-log p(target) per position, float64\n")
        f.write("\n".join(lines) + "\n")
    for name in ("dense", "legacy", "moe"):  # fairseq's model directories hold their dict.txt
        shutil.copy(os.path.join(out, "dict.txt"), os.path.join(out, name, "dict.txt"))
    write_bad(out)
    write_fuzz_seeds(out, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus"))


# ---- hostile and broken files (for the reader's error tests and the fuzz seeds) -------------
class FakeStorage:
    """Stands for a storage in a hand-made pickle: persistent id ('storage', TYPE, key, 'cpu', numel)."""

    def __init__(self, key, numel, kind=torch.FloatStorage):
        self.key, self.numel, self.kind = key, numel, kind


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


def hand_pickle(obj):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def hand_zip(path, entries, method=zipfile.ZIP_STORED):
    """A torch-style archive (PREFIX/data.pkl, PREFIX/data/KEY) written by Python's zipfile."""
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2021, 12, 1, 0, 0, 0))  # fixed: the same bytes every run
            info.compress_type = method
            z.writestr(info, data)


def zip64_archive(entries):
    """A stored zip archive written entirely in the zip64 form that PyTorch uses for files over
    4 GB: 0xFFFFFFFF in every size and offset field, the values in zip64 extra fields, a zip64
    end of central directory record with its locator, and 0xFFFF entry counts."""
    import zlib
    out, central = bytearray(), bytearray()
    for name, data in entries:
        n = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(n), len(extra))
        out += n + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(n), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF)
        central += n + cextra
    cd_off = len(out)
    out += central
    eocd64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def tiny_state(tensor):
    return {"model": collections.OrderedDict([("w", tensor)])}


def write_bad(out):
    d = os.path.join(out, "bad")
    os.makedirs(d, exist_ok=True)
    floats = struct.pack("<6f", *range(6))

    def archive(name, obj, storages, method=zipfile.ZIP_STORED):
        entries = [("archive/data.pkl", hand_pickle(obj))] + [("archive/data/%s" % k, v) for k, v in storages]
        entries.append(("archive/version", b"3\n"))
        hand_zip(os.path.join(d, name), entries, method)

    ok = FakeTensor(FakeStorage("0", 6), 0, (2, 3), (3, 1))
    archive("ok-stored.pt", tiny_state(ok), [("0", floats)])
    archive("ok-deflated.pt", tiny_state(ok), [("0", floats)], zipfile.ZIP_DEFLATED)
    open(os.path.join(d, "ok-zip64.pt"), "wb").write(zip64_archive(
        [("archive/data.pkl", hand_pickle(tiny_state(ok))), ("archive/data/0", floats), ("archive/version", b"3\n")]))
    transposed = FakeTensor(FakeStorage("0", 6), 0, (3, 2), (1, 3))
    archive("ok-transposed.pt", tiny_state(transposed), [("0", floats)])
    archive("bad-stride.pt", tiny_state(FakeTensor(FakeStorage("0", 6), 1, (2, 3), (3, 1))), [("0", floats)])
    archive("bad-numel.pt", tiny_state(FakeTensor(FakeStorage("0", 9), 0, (2, 3), (3, 1))), [("0", floats)])
    archive("missing-storage.pt", tiny_state(ok), [])
    archive("bad-storage-type.pt", tiny_state(FakeTensor(FakeStorage("0", 6, torch.ComplexFloatStorage), 0, (2, 3),
                                                         (3, 1))), [("0", floats * 2)])
    # a pickle that asks for os.system: refused before anything else
    evil = b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01cos\nsystem\nq\x02X\x02\x00\x00\x00idq\x03\x85q\x04Rq\x05s."
    hand_zip(os.path.join(d, "evil-global.pt"), [("archive/data.pkl", evil), ("archive/version", b"3\n")])
    # a real torch.save file, truncated, and with a corrupted storage byte
    real = open(os.path.join(out, "dense", "model.pt"), "rb").read()
    open(os.path.join(d, "truncated.pt"), "wb").write(real[: len(real) // 2])
    small = bytearray(open(os.path.join(d, "ok-stored.pt"), "rb").read())
    small[bytes(small).index(floats) + 9] ^= 0xFF  # a storage byte: the CRC no longer matches
    open(os.path.join(d, "bad-crc.pt"), "wb").write(bytes(small))
    # the start of a legacy (pre-1.6) file, as torch.save(..., _use_new_zipfile_serialization=False)
    # writes it: the magic number, the protocol version and the system info, each pickled (the
    # rest is left out: torch's legacy files hold memory addresses and differ on every run)
    legacy = b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    open(os.path.join(d, "legacy-format.pt"), "wb").write(legacy)
    # a fairseq checkpoint with an option moelm does not implement
    dense = torch.load(os.path.join(out, "dense", "model.pt"))
    dense["cfg"]["model"]["layernorm_embedding"] = True
    torch.save(dense, os.path.join(d, "unsupported-option.pt"))
    dense["cfg"]["model"]["layernorm_embedding"] = False
    dense["model"]["decoder.extra_thing.weight"] = torch.zeros(2)
    torch.save(dense, os.path.join(d, "extra-tensor.pt"))
    del dense["model"]["decoder.extra_thing.weight"]
    tied = dense["model"]["decoder.output_projection.weight"]
    dense["model"]["decoder.output_projection.weight"] = tied + 1
    torch.save(dense, os.path.join(d, "tied-differ.pt"))
    dense["model"]["decoder.output_projection.weight"] = tied
    del dense["model"]["decoder.layers.1.fc2.bias"]
    torch.save(dense, os.path.join(d, "missing-tensor.pt"))
    shutil.copy(os.path.join(out, "dict.txt"), os.path.join(d, "dict.txt"))


def write_fuzz_seeds(out, fuzzdir):
    """Seeds for tests/fuzz: valid-* are accepted, near-* one defect away and refused."""
    pk, zp = os.path.join(fuzzdir, "pickle"), os.path.join(fuzzdir, "zip")
    os.makedirs(pk, exist_ok=True)
    os.makedirs(zp, exist_ok=True)
    small = os.path.join(out, "bad", "ok-stored.pt")
    data = open(small, "rb").read()
    pkl = zipfile.ZipFile(small).read("archive/data.pkl")
    meters = io.BytesIO()
    pickle.Pickler(meters, protocol=2).dump({"extra_state": extra_state(), "args": argparse.Namespace(a=1, b=[1.5, None])})
    seeds = {
        "valid-tensor.pkl": pkl,
        "valid-meters.pkl": meters.getvalue(),
        "valid-scalars.pkl": pickle.dumps([1, -2, 2 ** 70, 1.5, "s\u00e9", b"by", True, None, (1,), (1, 2), (1, 2, 3)],
                                          protocol=2),
        "near-truncated.pkl": pkl[:-7],
        "near-bad-opcode.pkl": pkl[:-1] + b"\xff.",
        "near-evil-global.pkl": b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.",
        "near-deep.pkl": b"\x80\x02" + b"(" * 300 + b")" + b"t" * 300 + b".",
        "near-huge-length.pkl": b"\x80\x02X\xff\xff\xff\x7fabc.",
        "near-memo.pkl": b"\x80\x02h\x07.",
    }
    for name, b in seeds.items():
        open(os.path.join(pk, name), "wb").write(b)
    open(os.path.join(zp, "valid-small.pt"), "wb").write(data)
    open(os.path.join(zp, "valid-deflated.pt"), "wb").write(open(os.path.join(out, "bad", "ok-deflated.pt"), "rb").read())
    open(os.path.join(zp, "valid-zip64.pt"), "wb").write(open(os.path.join(out, "bad", "ok-zip64.pt"), "rb").read())
    z64 = bytearray(open(os.path.join(out, "bad", "ok-zip64.pt"), "rb").read())
    loc = bytes(z64).rindex(b"PK\x06\x07")
    z64[loc + 8:loc + 16] = struct.pack("<Q", 3)  # the locator points at no zip64 record
    open(os.path.join(zp, "near-zip64-locator.pt"), "wb").write(bytes(z64))
    open(os.path.join(zp, "near-truncated.pt"), "wb").write(data[:-30])
    crc = bytearray(data)
    crc[data.index(floats_marker()) + 1] ^= 1
    open(os.path.join(zp, "near-bad-crc.pt"), "wb").write(bytes(crc))
    eocd = bytearray(data)
    at = data.rindex(b"PK\x05\x06")
    eocd[at + 16:at + 20] = struct.pack("<I", len(data))  # central directory offset past the end
    open(os.path.join(zp, "near-bad-directory.pt"), "wb").write(bytes(eocd))
    method = bytearray(data)
    cd = data.index(b"PK\x01\x02")
    method[cd + 10:cd + 12] = struct.pack("<H", 99)
    open(os.path.join(zp, "near-bad-method.pt"), "wb").write(bytes(method))


def floats_marker():
    return struct.pack("<2f", 2, 3)  # inside the storage of bad/ok-stored.pt


if __name__ == "__main__":
    main()
