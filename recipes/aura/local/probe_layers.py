"""Is the spoken content *in* a model's audio states? A linear CTC probe per layer (the reading diagnosis).

A linear map from one layer's states at the audio positions to the LLM's tokens (+ a blank), trained with CTC on
frozen features of the train cuts and greedy-decoded on dev: its WER says how much of the transcript that layer
holds in linearly readable form. The same probe on the teacher's cached layers (stage-2 cuts) is the reference;
on the patch embedding's output (student layer 0) the floor. When the student's distilled layer reads about as
well as the teacher's, distillation carried the content and what is missing is the LLM's reading of it.

    python recipes/aura/local/probe_layers.py --nemo exp/default/stage3/aura_distilled.nemo \
        --train-cuts exp/default/stage2/train/cuts.jsonl.gz --dev-cuts exp/default/stage2/dev/cuts.jsonl.gz \
        --layers 0 6 --teacher-layers 6 --out exp/default/probe
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from lhotse import CutSet
from torch import Tensor
from tqdm import tqdm

from nemo_aura.data.dataset import AuRADataset
from nemo_aura.data.teacher_cache import LAYERS_FIELD
from nemo_aura.parts.files import atomic_path, write_json_atomic, write_text_atomic
from nemo_aura.scoring.metrics import wer


def student_source(layer: int) -> str:
    return f"student_L{layer}"


def teacher_source(layer: int) -> str:
    return f"teacher_L{layer}"


@torch.no_grad()
def extract_features(model, cuts: list, layers: list[int], teacher_layers: list[int], batch_size: int = 16) -> dict:
    """Per-utterance states ``{source: [(N_i, D)]}`` at the audio positions (the ASR prompt, as in distillation)
    and the transcript token ids ``tokens: [(L_i,)]``. Student layer 0 is the patch embedding's output; teacher
    layers come from the cuts' cached targets (stage 2)."""
    if teacher_layers and not all(c.has_custom(LAYERS_FIELD) for c in cuts):
        raise ValueError("teacher layers asked for, but the cuts carry no cached teacher targets (use stage-2 cuts)")
    dataset = AuRADataset(model.prompts, model.sample_rate, model.pad_id, default_task="asr")
    deep = sorted(l for l in layers if l > 0)
    feats: dict[str, list[Tensor]] = {s: [] for s in [*map(student_source, layers), *map(teacher_source, teacher_layers)]}
    tokens: list[Tensor] = []
    for start in tqdm(range(0, len(cuts), batch_size), desc="probe features", unit="batch"):
        batch = dataset[CutSet.from_cuts(cuts[start : start + batch_size])]
        inputs = model.embed_audio_and_text(batch["audio"], batch["audio_lens"], batch["input_ids"], batch["input_lens"])
        lens = inputs["patch_lens"].tolist()
        states = {0: inputs["inputs_embeds"]}
        if deep:
            captured, _ = model.run_llm(inputs["inputs_embeds"], inputs["attention_mask"], deep, need_logits=False,
                                        audio_mask=inputs["audio_mask"])
            states.update(captured)
        for layer in layers:
            audio = states[layer][inputs["audio_mask"]].float().split(lens)  # positions in order, item by item
            feats[student_source(layer)].extend(a.clone() for a in audio)
        if teacher_layers and batch["teacher_target_lens"].tolist() != lens:
            raise ValueError(f"cuts {batch['cut_ids']}: cached teacher targets have {batch['teacher_target_lens'].tolist()} "
                             f"patches, the model's patch embedding {lens}: the cache was built for another patch rate")
        for layer in teacher_layers:
            if layer not in batch["teacher_targets"]:
                raise ValueError(f"the cached teacher targets hold layers {sorted(batch['teacher_targets'])}, not {layer}")
            cached = batch["teacher_targets"][layer].float()
            feats[teacher_source(layer)].extend(cached[b, : batch["teacher_target_lens"][b]].clone() for b in range(len(lens)))
        tokens.extend(batch["transcript_ids"][b, : batch["transcript_lens"][b]].clone() for b in range(len(lens)))
    return {"features": feats, "tokens": tokens}


class LinearCTCProbe(torch.nn.Module):
    """Standardised features -> logits over the train transcripts' token set + blank (index 0)."""

    def __init__(self, dim: int, vocab: Tensor, mean: Tensor, std: Tensor):
        super().__init__()
        self.register_buffer("vocab", vocab)  # probe class k (1-based) = LLM token vocab[k - 1]
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.proj = torch.nn.Linear(dim, len(vocab) + 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj((x - self.mean) / self.std)


def _padded(seqs: list[Tensor], value=0.0) -> tuple[Tensor, Tensor]:
    lens = torch.tensor([len(s) for s in seqs])
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value), lens


def ctc_feasible(frames: int, labels: Tensor) -> bool:
    """CTC needs a frame per label plus one between each pair of equal neighbours."""
    return frames >= len(labels) + int((labels[1:] == labels[:-1]).sum()) and len(labels) > 0


def train_probe(feats: list[Tensor], tokens: list[Tensor], epochs: int, lr: float = 2e-3, batch_utts: int = 32,
                seed: int = 0, desc: str = "probe") -> tuple[LinearCTCProbe, dict]:
    """Adam on the CTC loss over the utterances CTC can align (too few frames for the tokens: left out, counted)."""
    keep = [i for i, (f, t) in enumerate(zip(feats, tokens)) if ctc_feasible(len(f), t)]
    if not keep:
        raise ValueError("no train utterance has enough audio positions for its transcript tokens (CTC)")
    vocab = torch.unique(torch.cat([tokens[i] for i in keep]))
    index = {int(t): k + 1 for k, t in enumerate(vocab.tolist())}
    targets = [torch.tensor([index[int(t)] for t in tokens[i]]) for i in keep]
    stacked = torch.cat([feats[i] for i in keep])
    probe = LinearCTCProbe(stacked.shape[1], vocab, stacked.mean(0), stacked.std(0).clamp_min(1e-4))
    generator = torch.Generator().manual_seed(seed)
    optim = torch.optim.Adam(probe.parameters(), lr=lr)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    losses = []
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        total = 0.0
        order = torch.randperm(len(keep), generator=generator).tolist()
        for start in range(0, len(order), batch_utts):
            chunk = order[start : start + batch_utts]
            x, x_lens = _padded([feats[keep[i]] for i in chunk])
            y, y_lens = _padded([targets[i] for i in chunk], 0)
            log_probs = probe(x).log_softmax(-1).transpose(0, 1)  # (T, B, C)
            loss = ctc(log_probs, y, x_lens, y_lens)
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(chunk)
        losses.append(total / len(keep))
    return probe, {"train_utts": len(keep), "left_out_utts": len(feats) - len(keep), "vocab": len(vocab),
                   "train_loss_per_epoch": [round(v, 4) for v in losses]}


@torch.no_grad()
def greedy_decode(probe: LinearCTCProbe, feats: list[Tensor]) -> list[list[int]]:
    """Best path, repeats merged, blanks dropped, mapped back to LLM token ids."""
    out = []
    for f in feats:
        best = probe(f).argmax(-1)
        merged = torch.unique_consecutive(best)
        out.append([int(probe.vocab[k - 1]) for k in merged.tolist() if k != 0])
    return out


def probe_source(name: str, train: dict, dev: dict, tokenizer, epochs: int, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    probe, info = train_probe(train["features"][name], train["tokens"], epochs, seed=seed, desc=f"probe {name}")
    hyps = [tokenizer.ids_to_text(ids) if ids else "" for ids in greedy_decode(probe, dev["features"][name])]
    refs = [tokenizer.ids_to_text(t.tolist()) for t in dev["tokens"]]
    return {"source": name, "dev_wer": wer(hyps, refs), "dev_wer_vs_other": wer(hyps, refs[1:] + refs[:1]),
            "dev_utts": len(refs), "dim": int(train["features"][name][0].shape[1]), **info, "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1),
            "examples": [{"ref": r, "hyp": h} for r, h in zip(refs[:5], hyps[:5])]}


def report(results: dict, out_dir: Path) -> str:
    lines = ["| source | dev WER | WER vs other utterances | train utts (left out) | probe classes | final train CTC loss | s |",
             "|---|---|---|---|---|---|---|"]
    for r in results["probes"]:
        lines.append(f"| {r['source']} | {r['dev_wer']:.3f} | {r['dev_wer_vs_other']:.3f} | {r['train_utts']} "
                     f"({r['left_out_utts']}) | {r['vocab'] + 1} | {r['train_loss_per_epoch'][-1]:.3f} | {r['seconds']:.0f} |")
    md = (f"# Linear CTC probe of `{results['model']}`\n\n{results['protocol']}\n\n" + "\n".join(lines) +
          "\n\n![probe WER per source](probe.png)\n")
    write_text_atomic(out_dir / "results.md", md)
    return md


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = results["probes"]
    names = [r["source"] for r in probes]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 3.4))
    x = torch.arange(len(names)).float()
    ax.bar(x - 0.2, [r["dev_wer"] for r in probes], 0.4, label="own utterance")
    ax.bar(x + 0.2, [r["dev_wer_vs_other"] for r in probes], 0.4, label="another utterance", color="tab:gray")
    ax.set_xticks(x.tolist(), names, fontsize=8)
    ax.set_ylabel("dev WER of the linear CTC probe")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nemo", required=True, help="the AuRA model whose student layers are probed")
    p.add_argument("--train-cuts", required=True, help="cuts with transcripts (stage-2 cuts carry the teacher's layers)")
    p.add_argument("--dev-cuts", required=True)
    p.add_argument("--layers", type=int, nargs="*", default=[0], help="student layers (0 = the patch embedding's output)")
    p.add_argument("--teacher-layers", type=int, nargs="*", default=[], help="teacher layers cached in the cuts")
    p.add_argument("--train-limit", type=int, default=1500, help="first N train cuts")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--out", required=True, type=Path, help="directory for results.{json,md} and probe.png")
    args = p.parse_args(argv)
    from nemo_aura import AuRAModel

    torch.manual_seed(0)
    model = AuRAModel.restore_from(args.nemo, map_location="cpu").eval()
    train_cuts = list(CutSet.from_file(args.train_cuts).subset(first=args.train_limit))
    dev_cuts = list(CutSet.from_file(args.dev_cuts))
    train = extract_features(model, train_cuts, args.layers, args.teacher_layers)
    dev = extract_features(model, dev_cuts, args.layers, args.teacher_layers)
    probes = [probe_source(name, train, dev, model.tokenizer, args.epochs) for name in train["features"]]
    results = {
        "model": args.nemo, "train_cuts": args.train_cuts, "dev_cuts": args.dev_cuts, "probes": probes,
        "protocol": (f"A linear map (standardised features -> the train transcripts' LLM tokens + blank) trained with CTC "
                     f"for {args.epochs} epochs on {len(train_cuts)} train utterances' frozen states at the audio "
                     f"positions (ASR prompt), greedy-decoded on {len(dev_cuts)} dev utterances. 'WER vs other "
                     "utterances' scores the same hypotheses against other dev transcripts. student_L0 = the patch "
                     "embedding's output (the floor); teacher_L<t> = the teacher's layer t pooled to the patch grid."),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", results)
    plot(results, args.out / "probe.png")
    print(report(results, args.out))


if __name__ == "__main__":
    main()
