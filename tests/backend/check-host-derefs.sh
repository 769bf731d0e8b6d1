#!/usr/bin/env bash
# usage: tests/backend/check-host-derefs.sh [SRCDIR]   (prints the hits; docs/backend.md lists why each is fine)
# Host dereferences of backend pointers outside lib/backend/: every field that holds backend
# memory (the model's arenas and workspaces, the routing buffers, the KV cache, the mean-pool
# gate's buffers, Adam's moments, moelm_model_params/grads) indexed or dereferenced.
cd "${1:-$(dirname "$0")/../..}"
names='params|grads|sinusoid|d_src|d_tgt|d_pos|d_pad|x0|xf|meanf|rstdf|logits|logits_act|losses|dloss|dx|dtmp|dbig|dbig2|dqkv|datt|save_row|save_row_pe|moe_d1|moe_d2|moe_dw|moe_dlogits|moe_dlogits_act|n1|mean1|rstd1|qkv|att_saved|atty|r1|n2|mean2|rstd2|fc1|fcact|r2|xin|y|stats|gates|choice|norm|queued|location|kept|weight|count1|offsets|dispatch_token|dispatch_slot|dispatch_weight|order|exp_avg|exp_avg_sq|emb|pooled|h1|a1|z|lp|dlp|dz|da1|dh1|dpool|demb|tok|row|wrow|k|v|q|kv|att|tmp|ffn|d_tok|d_order|reorder_tmp|lprobs'
grep -rnE "(->|\.)($names)\s*\[|\*\s*\(?\s*[a-z_]+(->|\.)($names)\b|(moelm_model_params|moelm_model_grads)\([^)]*\)\s*\[" \
  lib/model lib/optim lib/io gating tasks cli --include='*.c' --include='*.h' | grep -v "^lib/backend/"
