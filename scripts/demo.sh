#!/usr/bin/env bash
# demo.sh: the whole PERK pipeline on the CPU, end to end, in a few minutes.
#
#  1. perk-data writes bAbI qa1 stories (where is X?) in distractor prose (train and held-out);
#  2. perk-train --mode pretrain trains a small GPT-2 from the config below,
#     with a word-level tokenizer built from the training records;
#  3. perk-train --mode icr fine-tunes the ICR baseline's LoRA adapter
#     (the context in the prompt);
#  4. perk-train meta-trains PERK on the frozen base (LoRA init, per-step
#     inner learning rates, token weighting), evaluating on held-out records
#     before, during and after;
#  5. perk-eval compares PERK and ICR on the held-out records.
#
# Everything lands in DEMO_OUT (default build/demo); eval.tsv files and
# report.md hold the figures. DEMO_DEVICE selects perk-eval's device
# (cpu or emu); DEMO_SCALE multiplies the step counts.
set -euo pipefail

out=${DEMO_OUT:-build/demo}
device=${DEMO_DEVICE:-cpu}
scale=${DEMO_SCALE:-1}
go=${GO:-go}

bin="$out/bin"
mkdir -p "$bin"
echo "== building the tools"
"$go" build -o "$bin/" ./cmd/perk-data ./cmd/perk-train ./cmd/perk-eval

data="$out/data"
mkdir -p "$data"
echo "== perk-data: bAbI qa1 stories (where is X?) in distractor prose"
"$bin/perk-data" babilong --task qa1 --facts 2 --tokens 96 --segment-tokens 48 --n 256 --seed 1 -o "$data/train.jsonl" -q
"$bin/perk-data" babilong --task qa1 --facts 2 --tokens 96 --segment-tokens 48 --n 32 --seed 2 --depths 0,0.5,1 -o "$data/held.jsonl" -q
head -n 1 "$data/train.jsonl"

cat > "$out/config.json" <<'JSON'
{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512, "vocab_size": 1}
JSON

echo "== perk-train --mode pretrain: a small GPT-2 on the records' text"
rm -rf "$out/base" "$out/icr" "$out/perk" "$out/eval"
"$bin/perk-train" --mode pretrain --init-config "$out/config.json" --tokenizer words:400 \
  --data "$data/train.jsonl" --corpus docs,qa --out "$out/base" --steps $((400 * scale)) \
  --outer-lr 3e-3 --batch-tokens 512 --log-every 50

echo "== perk-train --mode icr: the ICR baseline adapter"
"$bin/perk-train" --mode icr --model "$out/base" --data "$data/train.jsonl" --out "$out/icr" \
  --steps $((100 * scale)) --lora-rank 4 --lora-alpha 8 --outer-lr 3e-3 --log-every 25 \
  --eval-data "$data/held.jsonl" --eval-limit 16 --eval-max-new-tokens 12

echo "== perk-train: meta-training PERK"
"$bin/perk-train" --model "$out/base" --data "$data/train.jsonl" --out "$out/perk" \
  --steps $((100 * scale)) --inner-steps 2 --lora-rank 4 --lora-alpha 8 --inner-lr 1e-2 \
  --outer-lr 3e-3 --weighting --log-every 25 --save-every $((100 * scale)) \
  --eval-data "$data/held.jsonl" --eval-every $((50 * scale)) --eval-limit 16 --eval-max-new-tokens 12

echo "== perk-eval: PERK vs ICR on the held-out records ($device)"
ckpt="$out/perk/checkpoint-$((100 * scale))"
"$bin/perk-eval" --model "$out/base" --checkpoint "$ckpt" --data "$data/held.jsonl" --mode perk \
  --device "$device" --max-new-tokens 12 --out "$out/eval"
"$bin/perk-eval" --model "$out/base" --checkpoint "$out/icr" --data "$data/held.jsonl" --mode icr \
  --device "$device" --max-new-tokens 12 --out "$out/eval"

echo "== figures"
echo "-- held-out answer loss and exact match during training (eval.tsv)"
cat "$out/icr/eval.tsv"
tail -n +2 "$out/perk/eval.tsv"
echo "-- $out/eval/report.md"
cat "$out/eval/report.md"
