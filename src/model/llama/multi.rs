//! One token of each of several sequences in one pass: the projections and
//! the feed-forward run over all their rows together (the weights are read
//! once for all), each row's attention runs over its own sequence's cache
//! at its own position. Rounded as one-token steps (`Rounding::AsSteps`, or
//! fast mode's batch-invariant kernels), each row's logits equal those of
//! stepping its sequence alone.

use super::*;

impl Model {
    /// Token `tokens[b]` at the end of `kvs[b]` (position `kvs[b].seq_len()`)
    /// for every b, in one pass; logits (n_vocab per sequence) into `logits`,
    /// the final hidden rows left in `s.x`.
    pub fn step_many(&self, tokens: &[u32], kvs: &mut [&mut KvCache], s: &mut Scratch, r: Rounding, logits: &mut Vec<f32>) -> Result<()> {
        let c = &self.cfg;
        let nb = tokens.len();
        if nb == 0 || kvs.len() != nb {
            bail!("step_many: {nb} tokens for {} caches", kvs.len());
        }
        let pos: Vec<usize> = kvs.iter().map(|kv| kv.seq_len()).collect();
        for (kv, &p) in kvs.iter().zip(&pos) {
            for il in 0..c.n_layer {
                kv.check_write(il, p, 1)?;
            }
        }
        self.embed(tokens, s)?;
        let steps = r == Rounding::AsSteps;
        let plain = if steps { Batch::Steps } else { Batch::Whole };
        // one small scratch per sequence for its attention: its row of the
        // queries, keys and values, its RoPE tables
        let mut seqs = std::mem::take(&mut s.seqs);
        seqs.resize_with(nb, Scratch::default);
        for (sb, &p) in seqs.iter_mut().zip(&pos) {
            sb.n_tokens = 1;
            sb.rows = vec![0];
            self.rope_tables(p, 1, sb);
        }
        let (qd, kd, vd) = (c.n_head * c.head_dim_k, c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v);
        let ad = c.n_head * c.head_dim_v;
        let all: Vec<usize> = (0..nb).collect();
        for il in 0..c.n_layer {
            let l = &self.w.layers[il];
            self.qkv_proj(il, l, s, plain);
            s.att.resize(nb * ad, 0.0);
            for (b, (sb, kv)) in seqs.iter_mut().zip(kvs.iter_mut()).enumerate() {
                sb.q.clear();
                sb.q.extend_from_slice(&s.q[b * qd..(b + 1) * qd]);
                sb.k.clear();
                sb.k.extend_from_slice(&s.k[b * kd..(b + 1) * kd]);
                sb.v.clear();
                sb.v.extend_from_slice(&s.v[b * vd..(b + 1) * vd]);
                self.attend(il, l, pos[b], kv, sb, steps, &[0]);
                s.att[b * ad..(b + 1) * ad].copy_from_slice(&sb.att[..ad]);
            }
            self.attn_out(il, l, s, steps, &all);
            self.ffn_part(il, l, s, plain);
        }
        s.seqs = seqs;
        self.head(s, r, logits);
        Ok(())
    }
}
