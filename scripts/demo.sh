#!/usr/bin/env bash
# demo.sh: the whole PERK pipeline on the CPU, end to end, in a few minutes.
#
#  1. perk-data writes bAbI qa1 stories (where is X?) in distractor prose:
#     training records and two held-out sets, one like the training records
#     (held: ~96-token contexts, 2-3 documents) and one with longer contexts
#     (held-long: ~192 tokens, 5-6 documents, more than any training record);
#  2. perk-train --mode pretrain trains a small GPT-2 from the config below,
#     with a word-level tokenizer built from the training records;
#  3. perk-train --mode icr fine-tunes the ICR baseline's LoRA adapter
#     (the context in the prompt), evaluating on both held-out sets before
#     and after;
#  4. perk-train meta-trains PERK on the frozen base (LoRA init, per-step
#     inner learning rates, token weighting), evaluating on both held-out
#     sets before, during and after;
#  5. perk-eval compares PERK and ICR on both held-out sets together
#     (report.md, report.json and PNG charts, by context length and depth);
#  6. a summary: PERK's held-out answer loss and exact match at meta-step 0
#     and after meta-training, ICR's, and the report. A loud WARNING line is
#     printed when PERK's answer loss did not go down or its exact match did
#     not go up on a held-out set.
#
# Everything lands in DEMO_OUT (default build/demo); eval.tsv files and
# report.md hold the figures. DEMO_DEVICE selects perk-eval's device
# (cpu or emu); DEMO_SCALE multiplies the step counts.
set -euo pipefail

out=${DEMO_OUT:-build/demo}
device=${DEMO_DEVICE:-cpu}
scale=${DEMO_SCALE:-1}
go=${GO:-go}
steps=$((100 * scale))

bin="$out/bin"
mkdir -p "$bin"
echo "== building the tools"
"$go" build -o "$bin/" ./cmd/perk-data ./cmd/perk-train ./cmd/perk-eval

data="$out/data"
mkdir -p "$data"
echo "== perk-data: bAbI qa1 stories (where is X?) in distractor prose"
gen=(babilong --task qa1 --facts 2 --segment-tokens 48 -q)
"$bin/perk-data" "${gen[@]}" --tokens 96 --n 256 --seed 1 -o "$data/train.jsonl"
"$bin/perk-data" "${gen[@]}" --tokens 96 --n 32 --seed 2 --depths 0,0.5,1 -o "$data/held.jsonl"
# Longer contexts, same task, another seed. Record ids restart at 0 in every
# file: the long ones get a "long-" prefix so that both sets can be
# evaluated together.
"$bin/perk-data" "${gen[@]}" --tokens 192 --n 32 --seed 3 --depths 0,0.5,1 -o - |
  sed 's/^{"id":"babilong-qa1-/{"id":"babilong-qa1-long-/' >"$data/held-long.jsonl"
if [ "$(grep -c '^{"id":"babilong-qa1-long-' "$data/held-long.jsonl")" != 32 ]; then
  echo "demo: could not prefix the record ids of $data/held-long.jsonl" >&2
  exit 1
fi
cat "$data/held.jsonl" "$data/held-long.jsonl" >"$data/held-all.jsonl"
held="$data/held.jsonl,$data/held-long.jsonl"
head -n 1 "$data/train.jsonl"

cat >"$out/config.json" <<'JSON'
{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512, "vocab_size": 1}
JSON

echo "== perk-train --mode pretrain: a small GPT-2 on the records' text"
rm -rf "$out/base" "$out/icr" "$out/perk" "$out/eval"
"$bin/perk-train" --mode pretrain --init-config "$out/config.json" --tokenizer words:400 \
  --data "$data/train.jsonl" --corpus docs,qa --out "$out/base" --steps $((400 * scale)) \
  --outer-lr 3e-3 --batch-tokens 512 --log-every 50

echo "== perk-train --mode icr: the ICR baseline adapter"
"$bin/perk-train" --mode icr --model "$out/base" --data "$data/train.jsonl" --out "$out/icr" \
  --steps "$steps" --lora-rank 4 --lora-alpha 8 --outer-lr 3e-3 --log-every 25 \
  --eval-data "$held" --eval-max-new-tokens 12

echo "== perk-train: meta-training PERK"
"$bin/perk-train" --model "$out/base" --data "$data/train.jsonl" --out "$out/perk" \
  --steps "$steps" --inner-steps 3 --unroll-start 1 --lora-rank 4 --lora-alpha 8 --inner-lr 1e-2 \
  --outer-lr 3e-3 --weighting --log-every 25 --save-every "$steps" \
  --eval-data "$held" --eval-every $((50 * scale)) --eval-max-new-tokens 12

echo "== perk-eval: PERK vs ICR on both held-out sets ($device)"
for mode in perk icr; do
  ckpt="$out/perk/checkpoint-$steps"
  [ "$mode" = icr ] && ckpt="$out/icr"
  "$bin/perk-eval" --model "$out/base" --checkpoint "$ckpt" --data "$data/held-all.jsonl" --mode "$mode" \
    --device "$device" --max-new-tokens 12 --out "$out/eval" | grep -v -e '^\[[0-9]*/[0-9]*\] ' -e '^chart: '
done

# evalrows prints one line per held-out set of eval.tsv ($1) for mode $2:
# answer loss and exact match at the first and the last step evaluated; with
# $3 = check, a WARNING line when the loss did not go down or the exact match
# did not go up. Columns: mode step data n answer_loss accuracy unanswered.
evalrows() {
  awk -F'\t' -v mode="$2" -v check="${3:-}" '
    function loss(l, u, n) { return u == n ? "   n/a" : sprintf("%.4f", l) }
    NR == 1 || $1 != mode { next }
    {
      d = $3
      if (!(d in s0)) { sets[++k] = d; s0[d] = $2; l0[d] = $5; a0[d] = $6; u0[d] = $7 }
      s1[d] = $2; l1[d] = $5; a1[d] = $6; u1[d] = $7; n[d] = $4
    }
    END {
      for (i = 1; i <= k; i++) {
        d = sets[i]
        printf "  %-10s %3d records  answer loss %s -> %s   exact match %5.1f%% -> %5.1f%%   (steps %d -> %d)\n", d, n[d],
          loss(l0[d], u0[d], n[d]), loss(l1[d], u1[d], n[d]), 100 * a0[d], 100 * a1[d], s0[d], s1[d]
        if (u1[d] > 0)
          printf "  %-10s %d of %d records unanswered after training (counted wrong)\n", "", u1[d], n[d]
        if (check != "" && !(u1[d] == 0 && l1[d] + 0 < l0[d] + 0 && a1[d] + 0 > a0[d] + 0)) {
          printf "\n!!!! WARNING: PERK did not improve on %s: answer loss %s -> %s, exact match %.1f%% -> %.1f%% (steps %d -> %d) !!!!\n\n",
            d, loss(l0[d], u0[d], n[d]), loss(l1[d], u1[d], n[d]), 100 * a0[d], 100 * a1[d], s0[d], s1[d]
          bad++
        }
      }
      if (check != "" && k > 0 && bad == 0)
        print "  PERK learned: on every held-out set the answer loss went down and the exact match went up."
    }' "$1"
}

# predstats prints, per held-out set of a predictions file ($1), its records,
# context tokens (meta.tokens) and documents, and with $2 = icr the longest
# prompt and the unanswered records.
predstats() {
  awk -v mode="${2:-}" '
    function num(key) { return match($0, "\"" key "\":[0-9]+") ? substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0 : 0 }
    {
      d = $0 ~ /^\{"id":"babilong-qa1-long-/ ? "held-long" : "held"
      if (!(d in n)) { sets[++k] = d; tmin[d] = smin[d] = 1e9 }
      n[d]++
      t = num("context_tokens"); s = num("segments"); p = num("prompt_tokens")
      if (t < tmin[d]) tmin[d] = t
      if (t > tmax[d]) tmax[d] = t
      if (s < smin[d]) smin[d] = s
      if (s > smax[d]) smax[d] = s
      if (p > pmax[d]) pmax[d] = p
      if ($0 ~ /"error":/) err[d]++
    }
    END {
      for (i = 1; i <= k; i++) {
        d = sets[i]
        if (mode == "icr")
          printf "  %-10s longest ICR prompt %d tokens; %d of %d records unanswered\n", d, pmax[d], err[d] + 0, n[d]
        else
          printf "  %-10s %3d records, contexts of %d-%d tokens in %d-%d documents\n", d, n[d], tmin[d], tmax[d], smin[d], smax[d]
      }
    }' "$1"
}

echo
echo "== summary"
echo "-- held-out sets (context tokens: perk-data's estimate, about 4 bytes a token)"
predstats "$out/eval/predictions-perk.jsonl"
echo "  training   $(wc -l <"$data/train.jsonl") records generated like held (up to 96 tokens, documents of up to 48)"
echo
echo "-- PERK: held-out answer loss and exact match at meta-step 0 and after meta-training ($out/perk/eval.tsv)"
evalrows "$out/perk/eval.tsv" perk check
echo "  every evaluation:"
sed 's/^/    /' "$out/perk/eval.tsv"
echo
echo "-- ICR baseline, same base and training records, context in the prompt ($out/icr/eval.tsv; step 0 is the base model)"
evalrows "$out/icr/eval.tsv" icr
positions=$(grep -o '"n_positions": *[0-9]*' "$out/base/config.json" | grep -o '[0-9]*$')
predstats "$out/eval/predictions-icr.jsonl" icr
if grep -q '"error":' "$out/eval/predictions-icr.jsonl"; then
  echo "  ICR records whose prompt does not fit the model's $positions positions are counted wrong, by design."
else
  echo "  every ICR prompt fits the model's $positions positions"
fi
echo
echo "-- perk-eval: PERK (checkpoint-$steps) vs ICR on both held-out sets ($out/eval/report.md)"
echo "   (perk-eval's own test-time learning: its dropout seeds differ from perk-train's evaluation above)"
cat "$out/eval/report.md"
echo
echo "-- charts"
for f in "$out"/eval/*.png; do
  echo "  $f"
done
