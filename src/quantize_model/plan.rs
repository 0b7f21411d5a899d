//! Which type each tensor gets: llama-quantize's rules (llama-quant.cpp) for
//! the file types rllama supports — what may be quantized, the K-quant mixes
//! per tensor role and layer, tied embeddings, and the fallbacks when a row
//! length is not a multiple of the block size.

use super::ftype::Ftype;
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use std::cmp::Ordering;

#[derive(Clone, Debug, Default)]
pub struct Params {
    pub allow_requantize: bool,
    pub pure: bool,
    /// false with --leave-output-tensor.
    pub quantize_output: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    for (pat, c) in [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ] {
        if name.contains(pat) {
            return c;
        }
    }
    Other
}

fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// ggml_n_dims: dimensions up to the last one above 1.
fn n_dims(t: &TensorInfo) -> usize {
    (1..t.dims.len()).rev().find(|&i| t.dims[i] > 1).map(|i| i + 1).unwrap_or(1)
}

/// tensor_allows_quantization for the architectures rllama reads.
pub fn allows_quantization(p: &Params, t: &TensorInfo) -> bool {
    if n_dims(t) < 2 {
        return false;
    }
    let n = t.name.as_str();
    let mut q = n.ends_with("weight");
    q &= !n.contains("_norm.weight");
    q &= p.quantize_output || n != "output.weight";
    for pat in [
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ] {
        q &= !n.contains(pat);
    }
    q &= n != "position_embd.weight" && n != "token_types.weight";
    q
}

/// The layer number of "blk.N." names (-1 otherwise), as sscanf reads it.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else { return -1 };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('.') {
        return -1;
    }
    digits.parse().unwrap_or(-1)
}

/// llama.cpp's tensor order for quantization (weight_name_comparer): by layer, then name.
pub fn tensor_order(g: &GgufFile) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..g.tensors.len()).collect();
    idx.sort_by(|&a, &b| {
        let (na, nb) = (&g.tensors[a].name, &g.tensors[b].name);
        match layer_of(na).cmp(&layer_of(nb)) {
            Ordering::Equal => na.as_bytes().cmp(nb.as_bytes()),
            o => o,
        }
    });
    idx
}

/// Model facts the rules look at.
#[derive(Clone, Debug)]
pub struct ModelFacts {
    pub arch: String,
    pub n_layer: i64,
    pub n_gqa: i64,
    pub n_expert: i64,
    /// llama.cpp's LLM_TYPE_70B (the attn_v bump).
    pub is_70b: bool,
}

impl ModelFacts {
    pub fn from_gguf(g: &GgufFile) -> Self {
        let arch = g.get_str("general.architecture").unwrap_or("").to_string();
        let k = |s: &str| g.get_i64(&format!("{arch}.{s}"));
        let n_layer = k("block_count").unwrap_or(0);
        let n_head = k("attention.head_count").unwrap_or(0);
        let n_head_kv = k("attention.head_count_kv").unwrap_or(n_head);
        let n_gqa = if n_head_kv > 0 { n_head / n_head_kv } else { 0 };
        let is_70b = arch == "llama" && n_layer == 80 && n_head != n_head_kv;
        ModelFacts { n_layer, n_gqa, n_expert: k("expert_count").unwrap_or(0), is_70b, arch }
    }
}

/// One tensor's decision, with the fallback warning llama-quantize prints.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub index: usize,
    pub new_type: GgmlType,
    pub warning: Option<String>,
}

struct State {
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_ffn: i64,
    i_ffn_down: i64,
    has_tied_embeddings: bool,
}

fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Decide every tensor's type, in llama.cpp's tensor order.
pub fn plan(g: &GgufFile, ftype: Ftype, p: &Params) -> Vec<TensorPlan> {
    let m = ModelFacts::from_gguf(g);
    let order = tensor_order(g);
    let mut st = State {
        n_attention_wv: order.iter().filter(|&&i| is_attn_v(category(&g.tensors[i].name))).count() as i64,
        i_attention_wv: 0,
        n_ffn: m.n_layer,
        i_ffn_down: 0,
        has_tied_embeddings: !order.iter().any(|&i| category(&g.tensors[i].name) == Category::Output),
    };
    let default_type = ftype.default_type();
    order
        .into_iter()
        .map(|i| {
            let t = &g.tensors[i];
            let mut warning = None;
            let new_type = if allows_quantization(p, t) { tensor_type(&mut st, &m, p, t, ftype, default_type, &mut warning) } else { t.ty };
            TensorPlan { index: i, new_type, warning }
        })
        .collect()
}

pub fn is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

fn tensor_type(st: &mut State, m: &ModelFacts, p: &Params, t: &TensorInfo, ftype: Ftype, default_type: GgmlType, warning: &mut Option<String>) -> GgmlType {
    let cat = category(&t.name);
    if let (Some(ty), Category::TokenEmbd) = (p.token_embedding_type, cat) {
        return ty;
    }
    if let (Some(ty), Category::Output) = (p.output_tensor_type, cat) {
        return ty;
    }
    let mut new_type = default_type;
    if is_quantized(default_type) {
        if !p.pure {
            new_type = mix_type(st, m, p, t, ftype, new_type, cat);
        }
        new_type = fallback(t, new_type, warning);
    }
    new_type
}

/// tensor_type_fallback: a type whose block fits the row length.
fn fallback(t: &TensorInfo, target: GgmlType, warning: &mut Option<String>) -> GgmlType {
    use GgmlType::*;
    let ncols = t.dims[0];
    let qk = target.block_elems() as u64;
    if ncols.is_multiple_of(qk) {
        return target;
    }
    let mut msg = format!("warning: {:<36} - ncols {:6} not divisible by {:3} (required for type {:>7}) ", t.name, ncols, qk, target.name());
    let mut ret = match target {
        IQ4_XS => IQ4_NL,
        Q2_K | Q3_K => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    if !ncols.is_multiple_of(ret.block_elems() as u64) {
        msg.push_str("(WARNING: must use F16 due to unusual shape) ");
        ret = F16;
    }
    msg.push_str(&format!("-> falling back to {:>7}", ret.name()));
    *warning = Some(msg);
    ret
}

/// llama_tensor_get_type_impl for the supported file types.
fn mix_type(st: &mut State, m: &ModelFacts, p: &Params, t: &TensorInfo, ftype: Ftype, mut new_type: GgmlType, cat: Category) -> GgmlType {
    use Category::*;
    use Ftype as F;
    use GgmlType as T;
    let falcon = m.arch == "falcon";
    if cat == Output || (st.has_tied_embeddings && cat == TokenEmbd) {
        if let Some(ty) = p.output_tensor_type {
            return ty;
        }
        let nx = t.dims[0];
        if falcon || !nx.is_multiple_of(new_type.block_elems() as u64) {
            new_type = T::Q8_0;
        } else if new_type != T::Q8_0 {
            new_type = T::Q6_K;
        }
        return new_type;
    }
    if cat == TokenEmbd {
        return p.token_embedding_type.unwrap_or(new_type);
    }
    if is_attn_v(cat) {
        new_type = match ftype {
            F::Q2_K => {
                if m.n_gqa >= 4 {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            F::Q3_K_M => {
                if st.i_attention_wv < 2 {
                    T::Q5_K
                } else {
                    T::Q4_K
                }
            }
            F::Q3_K_L => T::Q5_K,
            F::IQ4_NL | F::IQ4_XS if m.n_gqa >= 4 => T::Q5_K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(st.i_attention_wv, st.n_attention_wv) => T::Q6_K,
            F::Q4_K_S if st.i_attention_wv < 4 => T::Q5_K,
            _ => new_type,
        };
        if m.is_70b && (new_type == T::Q3_K || new_type == T::Q4_K) {
            new_type = T::Q5_K;
        }
        if m.n_expert == 8 {
            new_type = T::Q8_0;
        }
        st.i_attention_wv += 1;
    } else if cat == AttnK {
        if m.n_expert == 8 {
            new_type = T::Q8_0;
        }
    } else if cat == FfnDown {
        let (i_layer, n_layer) = layer_info(m, st.i_ffn_down, st.n_ffn, &t.name);
        match ftype {
            F::Q2_K => new_type = T::Q3_K,
            F::Q3_K_M => {
                new_type = if i_layer < n_layer / 16 {
                    T::Q5_K
                } else if !falcon || use_more_bits(i_layer, n_layer) {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            F::Q3_K_L => new_type = if falcon { T::Q4_K } else { T::Q5_K },
            F::Q4_K_M => {
                if falcon {
                    new_type = if i_layer < n_layer / 16 {
                        T::Q6_K
                    } else if use_more_bits(i_layer, n_layer) {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if use_more_bits(i_layer, n_layer) {
                    new_type = T::Q6_K;
                }
            }
            F::IQ4_NL | F::IQ4_XS if i_layer < n_layer / 8 => new_type = T::Q5_K,
            F::Q5_K_M if use_more_bits(i_layer, n_layer) => new_type = T::Q6_K,
            F::Q4_K_S if !falcon && i_layer < n_layer / 8 => new_type = T::Q5_K,
            _ => {}
        }
        st.i_ffn_down += 1;
    } else if cat == AttnOutput {
        if !falcon {
            if m.n_expert == 8 {
                if matches!(ftype, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::IQ4_NL | F::Q4_K_S | F::Q4_K_M | F::IQ4_XS) {
                    new_type = T::Q5_K;
                }
            } else {
                match ftype {
                    F::Q2_K => new_type = T::Q3_K,
                    F::Q3_K_M => new_type = T::Q4_K,
                    F::Q3_K_L => new_type = T::Q5_K,
                    _ => {}
                }
            }
        } else if ftype == F::Q3_K_L {
            new_type = T::Q4_K;
        }
    }
    // attn_qkv goes with attn_v above; ffn_gate / ffn_up only change for IQ3
    // mixes, which rllama does not make.
    new_type
}

/// (layer, layer count) for per-layer rules: the running counter, or the
/// block number for mixture-of-experts models (as llama.cpp parses it).
fn layer_info(m: &ModelFacts, i: i64, n: i64, name: &str) -> (i64, i64) {
    if m.n_expert > 1 {
        let l = layer_of(name);
        if l >= 0 && l < n {
            return (l, n);
        }
    }
    (i, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_like_llama_cpp() {
        // 24 layers (Qwen 0.5B): first 3, last 3, and every third from 3 + 2.
        let picked: Vec<i64> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn layer_numbers_and_order() {
        assert_eq!(layer_of("blk.12.attn_v.weight"), 12);
        assert_eq!(layer_of("token_embd.weight"), -1);
        assert_eq!(layer_of("blk.x.y"), -1);
    }
}
