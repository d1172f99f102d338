#!/usr/bin/env bash
# The whole-question benchmark (scale issue, item 6): wall time of the questions a user
# asks end to end, with the release binary, so they can be set beside other tools' times
# on the same questions:
#   1. the wide-EP question: scenarios/wide-ep-nvl72.yaml's sweep (1,296 points: 3 seeds)
#      with -j 2, then its frontier at 100 tokens/s per user; and its 432 points of seed 1
#      alone (the scale issue timed its 144 points of seed 1, before the decode layouts);
#   2. one decode-step estimate (`epsim step`, DeepSeek-R1 EP32 on GB200);
#   3. a capacity plan (the README's: DeepSeek-R1, NVL72, 200 req/s, 2K/512);
#   4. the scale scenarios: 1,024 H100s and 8 x NVL72 (simulated seconds per wall second).
# Usage: benches/whole_question.sh   (from the repository root; builds the release binary)
set -euo pipefail
cargo build --release --quiet
epsim=target/release/epsim
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
time_of() { # label, command...
    local label=$1; shift
    local start end
    start=$(date +%s.%N)
    "$@" > "$out/last.txt" 2>&1
    end=$(date +%s.%N)
    awk -v l="$label" -v a="$start" -v b="$end" 'BEGIN { printf "%-58s %8.2f s\n", l, b - a }'
}
echo "question                                                    wall"
time_of "wide EP: 1,296-point sweep, -j 2" \
    "$epsim" run scenarios/wide-ep-nvl72.yaml -j 2 --no-progress --out "$out/wide-ep"
# The one-seed copy names its files by absolute path: it lives in the temporary folder.
sed -e '/^  seeds: /d' -e "s#\.\./#$PWD/#" scenarios/wide-ep-nvl72.yaml > "$out/one-seed.yaml"
time_of "wide EP: its 432 points of seed 1, -j 2" \
    "$epsim" run "$out/one-seed.yaml" -j 2 --no-progress --out "$out/one-seed"
time_of "wide EP: frontier at 100 tok/s/user" \
    "$epsim" frontier "$out/wide-ep/summary.csv" --x tok_s_per_user \
    --y output_tok_s_per_decode_gpu --by ep,eplb,seed --at 100
time_of "one decode step (EP32, batch 64, context 2048)" \
    "$epsim" step --model deepseek-r1 --gpu b200-gb200 --ep 32 --slots 288 --weights nvfp4 \
    --mtp 1 --batch 64 --context 2048
time_of "capacity plan: 200 req/s, 2K/512, NVL72" \
    "$epsim" plan --model deepseek-r1 --topology topologies/gb200-nvl72.yaml --rate 200 \
    --isl 2048 --osl 512 --ttft-p99-ms 2000 --tpot-p99-ms 25 --weights nvfp4 --mtp 1 \
    --duration-s 30 -j 2
for s in h100-1024 nvl72x8; do
    time_of "scale: scenarios/scale/$s.yaml" \
        "$epsim" run "scenarios/scale/$s.yaml" --out "$out/$s"
    grep '^simulated' "$out/last.txt" | sed 's/^/    /'
done
