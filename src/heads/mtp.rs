//! `rllama graft --mtp`: a multi-token-prediction head grafted onto a model
//! that ships none, written in llama.cpp's nextn layout (see
//! `model::nextn`) as block `n_layer` of the heads file, with
//! `{arch}.nextn_predict_layers = 1`.
//!
//! The closed-form start: for each calibration position p, the pair
//! z = [rms(embed(x_p)); rms(output_norm(F_{p-1}))] (F: the model's final
//! hidden rows) is mapped to F_p by ridge regression (no intercept: eh_proj
//! has no bias); the block starts as the model's last block with its output
//! projections (attn_output, ffn_down) zero, so it passes its input through
//! until training gives it something to add; shared_head_norm is the
//! model's output norm. Held-out agreement with the full model's next
//! choice is measured with the head as drafting runs it, per draft position
//! (position k chains on the head's own output row k - 1 times), its
//! choices over the draft vocabulary.

use super::*;
use crate::gguf::{GgmlType, GgufWriter};
use crate::model::nextn::Nextn;
use crate::model::{Rounding, Scratch};
use crate::ops::norm::rms_norm_rows;
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use std::sync::Arc;
use std::time::Instant;

pub struct MtpParams {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks used for fitting (None: all but the held-out ones).
    pub chunks: Option<usize>,
    /// Chunks held out for the agreement report.
    pub holdout: usize,
    pub ridge: f64,
    /// Types of the head's matrices.
    pub ty: HeadTypes,
    /// Training epochs (0: the closed-form head only).
    pub epochs: usize,
    pub lr: f64,
    /// Tokens the model generates from calibration snippets to train on.
    pub self_distill: usize,
    /// Draft positions trained (1: the first; more: also chained on the
    /// head's own rows, as drafting runs it).
    pub depth: usize,
    /// Draft vocabulary the training loss runs over.
    pub train_vocab: usize,
    /// Prompts the self-distilled text continues (e.g. chat-formatted
    /// requests about calibration passages); empty: calibration snippets.
    pub distill_prompts: Vec<Vec<u32>>,
    /// Tokens that end a generation (end of turn).
    pub stop: Vec<u32>,
    /// The head's feed-forward width (None: `default_head_ff`).
    pub n_ff: Option<usize>,
}

/// The head's feed-forward width unless asked otherwise: half the model's,
/// rounded up to whole super-blocks (so a Q4_K_M head's `ffn_down` rows stay
/// Q6_K), at most the model's. On Qwen 1.5B (8,960 -> 4,608 units; 4,480
/// measured) the held-out agreement equals the full width's while training
/// takes 0.69x the time and a drafted token 0.75x (README, "MTP heads").
pub fn default_head_ff(model_ff: usize) -> usize {
    (model_ff / 2).next_multiple_of(crate::quant::kquants::QK_K).min(model_ff)
}

/// Draft positions the agreement is reported for.
pub const REPORT_POSITIONS: usize = 3;

/// Held-out top-1 agreement with the full model per draft position.
#[derive(Clone, Debug)]
pub struct Agreement {
    /// On the calibration text's held-out chunks.
    pub text: Vec<f64>,
    /// On held-out self-distilled answers (the answer tokens only).
    pub answers: Option<Vec<f64>>,
    /// Acceptance per draft position given those before it stood, in
    /// drafting's rounds replayed on the answers (else the text): the
    /// drafting policy's prior.
    pub accept: Vec<f64>,
}

pub struct MtpReport {
    /// The head written, and its closed-form start.
    pub agree: Agreement,
    pub agree_start: Agreement,
    pub held_out: usize,
    /// Answer positions held out.
    pub held_answers: usize,
    /// Self-distilled tokens trained on.
    pub distilled: usize,
    /// `heads.draft_vocab_size` written (None without held-out answers),
    /// and the sizes weighed for it.
    pub draft_rows: Option<usize>,
    pub rows_weighed: Vec<super::draft_rows::Weighed>,
    /// Seconds each phase took.
    pub times: Vec<(&'static str, f64)>,
}

/// Final hidden rows (before the output norm) of every token of `chunk`.
pub fn final_rows(model: &Model, chunk: &[u32]) -> Result<Vec<f32>> {
    let mut kv = model.new_cache(chunk.len())?;
    let mut s = Scratch::default();
    model.embed(chunk, &mut s)?;
    model.blocks(0..model.cfg.n_layer, 0, &mut kv, &mut s, Rounding::Batch, None)?;
    Ok(s.x)
}

/// Each row RMS-normalized (unit weights).
fn rms(x: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    rms_norm_rows(x, &vec![1.0; d], eps, &mut out);
    out
}

/// The head's inputs for a chunk: z_p = [rms(embed(x_p)); rms(output_norm(F_{p-1}))]
/// (zeros for the hidden half at p = 0), n x 2d.
pub fn pair_rows(model: &Model, chunk: &[u32], f: &[f32]) -> Result<Vec<f32>> {
    let (d, eps, n) = (model.cfg.n_embd, model.cfg.eps, chunk.len());
    let mut s = Scratch::default();
    model.embed(chunk, &mut s)?;
    let e = rms(&s.x, d, eps);
    let mut h = vec![0f32; n * d];
    rms_norm_rows(f, model.output_norm(), eps, &mut h);
    let h = rms(&h, d, eps);
    let mut z = vec![0f32; n * 2 * d];
    for p in 0..n {
        z[p * 2 * d..p * 2 * d + d].copy_from_slice(&e[p * d..(p + 1) * d]);
        if p > 0 {
            z[p * 2 * d + d..(p + 1) * 2 * d].copy_from_slice(&h[(p - 1) * d..p * d]);
        }
    }
    Ok(z)
}

/// Types of the head's matrices: `base` for most, `sensitive` for
/// `attn_v` and `ffn_down` (llama.cpp's Q4_K_M gives those more bits too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadTypes {
    pub base: GgmlType,
    pub sensitive: GgmlType,
}

/// Matrices that get `HeadTypes::sensitive`.
const SENSITIVE: [&str; 2] = ["attn_v", "ffn_down"];

impl From<GgmlType> for HeadTypes {
    fn from(t: GgmlType) -> Self {
        HeadTypes { base: t, sensitive: t }
    }
}

impl HeadTypes {
    /// The default: Q4_K, with Q6_K for the sensitive matrices (a drafted
    /// token reads half the bytes of a Q8_0 head at the same acceptance).
    pub const Q4_K_M: HeadTypes = HeadTypes { base: GgmlType::Q4_K, sensitive: GgmlType::Q6_K };

    /// A weight type's name, or `q4_k_m` for the mix.
    pub fn from_name(name: &str) -> Option<HeadTypes> {
        if name.eq_ignore_ascii_case("q4_k_m") {
            return Some(Self::Q4_K_M);
        }
        GgmlType::from_name(name).map(HeadTypes::from)
    }

    fn of(&self, matrix: &str) -> GgmlType {
        if SENSITIVE.contains(&matrix) {
            self.sensitive
        } else {
            self.base
        }
    }
}

/// `ty`, or for rows its blocks do not divide Q8_0 (32-element blocks),
/// else F32.
fn fitting(ty: GgmlType, cols: usize) -> GgmlType {
    [ty, GgmlType::Q8_0].into_iter().find(|t| t.row_bytes(cols).is_some()).unwrap_or(GgmlType::F32)
}

/// A matrix of `rows` x `cols` f32 values stored as `ty` (as `fitting`
/// says when the rows do not fit its blocks).
fn put(w: &mut GgufWriter, name: &str, cols: usize, rows: usize, x: &[f32], ty: GgmlType) -> Result<()> {
    let ty = fitting(ty, cols);
    let rb = ty.row_bytes(cols).unwrap_or(cols * 4);
    let mut out = vec![0u8; rows * rb];
    crate::quant::quantize::quantize_rows(ty, x, cols, &mut out)?;
    w.add_tensor(name, &[cols as u64, rows as u64], ty, out)
}

fn put_vec(w: &mut GgufWriter, name: &str, x: &[f32]) -> Result<()> {
    w.add_tensor(name, &[x.len() as u64], GgmlType::F32, x.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A matrix of the model as f32 rows.
fn dequant(m: &crate::ops::matmul::QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; m.rows * m.cols];
    for r in 0..m.rows {
        crate::quant::dequantize_row(m.ty, m.row(r), &mut out[r * m.cols..(r + 1) * m.cols]);
    }
    out
}

/// The `n` feed-forward hidden units (in order) whose gate row, up row and
/// down column (`down`: d rows of `gate.len() / d`) have the largest
/// product of norms.
fn ffn_units(gate: &[f32], up: &[f32], down: &[f32], d: usize, n: usize) -> Vec<usize> {
    let n_ff = gate.len() / d;
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let score = |i: usize| {
        let col: f32 = (0..d).map(|r| down[r * n_ff + i].powi(2)).sum::<f32>().sqrt();
        norm(&gate[i * d..(i + 1) * d]) * norm(&up[i * d..(i + 1) * d]) * col
    };
    let mut units: Vec<(f32, usize)> = (0..n_ff).map(|i| (score(i), i)).collect();
    units.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut keep: Vec<usize> = units[..n.min(n_ff)].iter().map(|u| u.1).collect();
    keep.sort_unstable();
    keep
}

/// A matrix of the head: name, columns, rows, values (rows are output
/// dimensions), bias.
pub type HeadMatrix = (&'static str, usize, usize, Vec<f32>, Option<Vec<f32>>);

/// The head's weights as f32 rows (matrices: rows are output dimensions).
#[derive(Clone)]
pub struct HeadWeights {
    pub eh_proj: Vec<f32>,
    pub enorm: Vec<f32>,
    pub hnorm: Vec<f32>,
    pub head_norm: Vec<f32>,
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// q, k, v, o, gate, up, down: (cols, rows, values, bias)
    pub mats: Vec<HeadMatrix>,
    /// Norms the block has besides attn/ffn (q/k norms, post norms), kept.
    pub extra_norms: Vec<(&'static str, Vec<f32>)>,
}

impl HeadWeights {
    /// The closed-form start: `eh_proj` (d rows of 2d), the model's last
    /// block with zero output projections (attn_output, ffn_down), its
    /// feed-forward cut to the `n_ff` hidden units (None: `default_head_ff`) where the
    /// last block's gate, up and down weights are largest (the product of
    /// their norms).
    pub fn start(model: &Model, eh_proj: Vec<f32>, n_ff: Option<usize>) -> HeadWeights {
        let c = &model.cfg;
        let d = c.n_embd;
        let last = model.layer(c.n_layer - 1);
        let [gate, up, down] = [&last.w_gate, &last.w_up, &last.w_down].map(|l| dequant(&l.w));
        let keep = ffn_units(&gate, &up, &down, d, n_ff.unwrap_or(default_head_ff(c.n_ff)).clamp(1, c.n_ff));
        let mut mats = Vec::new();
        for (name, lin) in [("attn_q", &last.wq), ("attn_k", &last.wk), ("attn_v", &last.wv), ("attn_output", &last.wo)] {
            let zero = name == "attn_output";
            let v = if zero { vec![0.0; lin.w.cols * lin.w.rows] } else { dequant(&lin.w) };
            mats.push((name, lin.w.cols, lin.w.rows, v, lin.bias.clone()));
        }
        let rows = |w: &[f32]| keep.iter().flat_map(|&i| w[i * d..(i + 1) * d].to_vec()).collect::<Vec<f32>>();
        let n = keep.len();
        mats.push(("ffn_gate", d, n, rows(&gate), None));
        mats.push(("ffn_up", d, n, rows(&up), None));
        mats.push(("ffn_down", n, d, vec![0.0; n * d], None));
        let extra_norms = [
            ("attn_q_norm", &last.q_norm),
            ("attn_k_norm", &last.k_norm),
            ("post_attention_norm", &last.post_attn_norm),
            ("post_ffw_norm", &last.post_ffn_norm),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.clone().map(|v| (n, v)))
        .collect();
        HeadWeights {
            eh_proj,
            enorm: vec![1.0; d],
            hnorm: vec![1.0; d],
            head_norm: model.output_norm().to_vec(),
            attn_norm: last.attn_norm.clone(),
            ffn_norm: last.ffn_norm.clone(),
            mats,
            extra_norms,
        }
    }

    /// The matrix `name` (values, bias).
    pub fn mat(&self, name: &str) -> Option<(&[f32], Option<&[f32]>)> {
        self.mats.iter().find(|m| m.0 == name).map(|m| (&m.3[..], m.4.as_deref()))
    }

    /// The tensors into `w` as block `n_layer` (matrices as `ty`).
    pub fn write(&self, model: &Model, w: &mut GgufWriter, ty: HeadTypes) -> Result<()> {
        let c = &model.cfg;
        let (d, il) = (c.n_embd, c.n_layer);
        let p = |s: &str| format!("blk.{il}.{s}");
        put(w, &p("nextn.eh_proj.weight"), 2 * d, d, &self.eh_proj, ty.of("eh_proj"))?;
        put_vec(w, &p("nextn.enorm.weight"), &self.enorm)?;
        put_vec(w, &p("nextn.hnorm.weight"), &self.hnorm)?;
        put_vec(w, &p("nextn.shared_head_norm.weight"), &self.head_norm)?;
        put_vec(w, &p("attn_norm.weight"), &self.attn_norm)?;
        put_vec(w, &p("ffn_norm.weight"), &self.ffn_norm)?;
        for (name, cols, rows, v, bias) in &self.mats {
            put(w, &p(&format!("{name}.weight")), *cols, *rows, v, ty.of(name))?;
            if let Some(b) = bias {
                put_vec(w, &p(&format!("{name}.bias")), b)?;
            }
        }
        for (name, v) in &self.extra_norms {
            put_vec(w, &p(&format!("{name}.weight")), v)?;
        }
        w.set(&format!("{}.nextn_predict_layers", c.arch), Value::U32(1));
        Ok(())
    }
}

/// Fit the head on `tokens`, write it into `w`, report held-out agreement.
pub fn graft_mtp(model: &Model, tokens: &[u32], p: &MtpParams, w: &mut GgufWriter, prog: &mut dyn super::graft::GraftProgress) -> Result<MtpReport> {
    let d = model.cfg.n_embd;
    if p.n_ctx < 2 {
        bail!("-c {}: chunks need at least 2 tokens", p.n_ctx);
    }
    let n_chunks = tokens.len() / p.n_ctx;
    if n_chunks < p.holdout + 1 {
        bail!("the calibration text has {} tokens: {} chunks of {} needed ({} held out)", tokens.len(), p.holdout + 1, p.n_ctx, p.holdout);
    }
    if p.epochs > 0 && !cfg!(feature = "train") {
        bail!("--epochs {}: this rllama was built without the 'train' feature (use --epochs 0 for the closed-form head)", p.epochs);
    }
    let fit = p.chunks.unwrap_or(usize::MAX).min(n_chunks - p.holdout);
    // each request once (a repeat's greedy answer is the same text)
    let n_distill = distill_requests(p.self_distill);
    let n_distill = if p.distill_prompts.is_empty() { n_distill } else { n_distill.min(p.distill_prompts.len()) };
    let total = fit + n_distill + p.holdout;
    faer::set_global_parallelism(faer::Par::rayon(rayon::current_num_threads()));
    let mut times = Vec::new();
    let t_rows = Instant::now();
    let mut samples = Vec::new();
    for ci in 0..fit {
        let chunk = tokens[ci * p.n_ctx..(ci + 1) * p.n_ctx].to_vec();
        let f = final_rows(model, &chunk)?;
        samples.push((chunk, f));
        prog.chunk(ci + 1, total);
    }
    times.push(("calibration rows", t_rows.elapsed().as_secs_f64()));
    // the model's own continuations of requests (or calibration snippets);
    // answers spread through the list are held out
    let prompts: Vec<Vec<u32>> = (0..n_distill)
        .map(|i| match p.distill_prompts.get(i) {
            Some(prompt) => prompt.clone(),
            None => {
                let at = (i * tokens.len() / n_distill.max(1)).min(tokens.len().saturating_sub(DISTILL_PROMPT));
                tokens[at..at + DISTILL_PROMPT.min(tokens.len())].to_vec()
            }
        })
        .collect();
    let t_distill = Instant::now();
    let mut answered = 0;
    // with their final hidden rows (all but the last token's)
    let seqs = crate::decode::batch::greedy_many(model, &prompts, DISTILL_GEN, &p.stop, crate::decode::batch::DEFAULT_WIDTH, true, |_| {
        answered += 1;
        prog.chunk(fit + answered, total);
    })?;
    let mut distilled = 0;
    let mut held_answers = Vec::new();
    for (i, (mut c, prompt)) in seqs.into_iter().zip(&prompts).enumerate() {
        c.tokens.truncate(c.rows.len() / d);
        if c.tokens.len() > prompt.len() + 1 {
            if held_answer(i, n_distill) {
                held_answers.push(HeldOut::from_rows(model, &c.tokens, c.rows)?.scored_from(prompt.len()));
            } else {
                distilled += c.tokens.len();
                samples.push((c.tokens, c.rows));
            }
        }
    }
    times.push(("self-distillation", t_distill.elapsed().as_secs_f64()));
    // the draft vocabulary ranks what drafting meets: the calibration text
    // and the model's own answers (code fences and a prompt's names that
    // book text lacks); held-out answers stay out of it
    let mut seen = tokens.to_vec();
    for (chunk, _) in &samples[fit..] {
        seen.extend_from_slice(chunk);
    }
    let order = super::graft::set_draft_vocab(model, w, &seen);
    let t_fit = Instant::now();
    let (mut zz, mut zy) = (Mat::<f64>::zeros(2 * d, 2 * d), Mat::<f64>::zeros(2 * d, d));
    for (chunk, f) in &samples {
        let z = pair_rows(model, chunk, f)?;
        let n = chunk.len();
        let zm = Mat::from_fn(n, 2 * d, |i, j| z[i * 2 * d + j] as f64);
        let ym = Mat::from_fn(n, d, |i, j| f[i * d + j] as f64);
        zz += zm.transpose() * &zm;
        zy += zm.transpose() * &ym;
    }
    let trace: f64 = (0..2 * d).map(|i| zz[(i, i)]).sum();
    let lambda = p.ridge * trace / (2 * d) as f64;
    let a = Mat::from_fn(2 * d, 2 * d, |i, j| zz[(i, j)] + if i == j { lambda } else { 0.0 });
    let Ok(llt) = a.llt(Side::Lower) else { bail!("mtp: the pairs' covariance is singular (raise --ridge)") };
    let wm = llt.solve(&zy);
    // eh_proj rows are output dimensions: E[j][i] = W[i][j]
    let eh: Vec<f32> = (0..d).flat_map(|j| (0..2 * d).map(move |i| (j, i))).map(|(j, i)| wm[(i, j)] as f32).collect();
    let start = HeadWeights::start(model, eh, p.n_ff);
    times.push(("closed-form fit", t_fit.elapsed().as_secs_f64()));
    let mut held = Vec::new();
    for hi in 0..p.holdout {
        let o = (n_chunks - p.holdout + hi) * p.n_ctx;
        held.push(HeldOut::new(model, &tokens[o..o + p.n_ctx])?);
        prog.chunk(fit + n_distill + hi + 1, total);
    }
    // the head's choices over the vocabulary it drafts from (and trains on)
    let vocab = draft_output(model, &seen, p.train_vocab)?;
    // a head as drafting runs it: written at the file's type, loaded back
    let as_head = |h: &HeadWeights| -> Result<Nextn> {
        let mut tmp = GgufWriter::new();
        h.write(model, &mut tmp, p.ty)?;
        load_written(model, &tmp)
    };
    let evaluate = |head: &Nextn, held: &[HeldOut]| -> Result<Counts> {
        let mut all = Counts::default();
        for chunk in held {
            all.add(&agreement(model, head, chunk, vocab.as_ref())?);
        }
        Ok(all)
    };
    let report = |h: &Nextn| -> Result<Agreement> {
        let text = evaluate(h, &held)?;
        let answers = if held_answers.is_empty() { None } else { Some(evaluate(h, &held_answers)?) };
        // drafting's prior: acceptance on answers (what drafting meets), else on text
        let chain = answers.as_ref().unwrap_or(&text);
        Ok(Agreement {
            text: rates(&text.hits, &text.tried),
            answers: answers.as_ref().map(|a| rates(&a.hits, &a.tried)),
            accept: rates(&chain.chain_hits, &chain.chain_tried),
        })
    };
    let t_eval = Instant::now();
    let start_head = as_head(&start)?;
    let agree_start = report(&start_head)?;
    let mut t_report = t_eval.elapsed().as_secs_f64();
    let t_train = Instant::now();
    let trained = if p.epochs > 0 { train_head(model, &seen, &start, samples, &held, p, prog)? } else { start };
    times.push(("training", t_train.elapsed().as_secs_f64()));
    trained.write(model, w, p.ty)?;
    let t_eval = Instant::now();
    let trained_head = if p.epochs > 0 { as_head(&trained)? } else { start_head };
    let agree = if p.epochs > 0 { report(&trained_head)? } else { agree_start.clone() };
    // the rows drafts use by default, weighed on the held-out answers
    let (draft_rows, rows_weighed) = super::draft_rows::weigh(model, &trained_head, &held_answers, &order)?;
    if let Some(k) = draft_rows {
        w.set(super::KEY_DRAFT_VOCAB_SIZE, Value::U32(k as u32));
    }
    t_report += t_eval.elapsed().as_secs_f64();
    times.push(("held-out agreement", t_report));
    w.set(super::KEY_MTP_ACCEPTANCE, Value::f32_array(agree.accept.iter().map(|&a| a as f32)));
    let answer_positions = held_answers.iter().map(|h| h.tokens.len() - h.from).sum();
    Ok(MtpReport { agree, agree_start, held_out: held.len() * p.n_ctx, held_answers: answer_positions, distilled, draft_rows, rows_weighed, times })
}

/// One in this many self-distilled answers is held out for the agreement
/// report (none below this many).
const HELD_ANSWERS_EVERY: usize = 8;

/// Whether answer `i` of `n` is held out: one in `HELD_ANSWERS_EVERY`,
/// spread through the list and alternating between even and odd places
/// (requests alternate between general ones and asks about passages).
fn held_answer(i: usize, n: usize) -> bool {
    let e = HELD_ANSWERS_EVERY;
    n >= e && (i % (2 * e) == e - 2 || i % (2 * e) == 2 * e - 1)
}

/// Tokens of calibration text each self-distillation sample starts from.
const DISTILL_PROMPT: usize = 64;
/// Tokens the model generates after each.
pub const DISTILL_GEN: usize = 192;
/// `graft --mtp`'s default `--self-distill`: 256 answers, the head's
/// agreement limited by the tokens it sees (see README, "MTP heads"),
/// the graft of Qwen 1.5B on 2 cores kept well under an hour.
pub const DEFAULT_SELF_DISTILL: usize = 256 * DISTILL_GEN;

/// Requests whose answers give `--self-distill N` tokens (each asked once).
pub fn distill_requests(self_distill: usize) -> usize {
    self_distill.div_ceil(DISTILL_GEN)
}

#[cfg(feature = "train")]
fn train_head(
    model: &Model,
    tokens: &[u32],
    start: &HeadWeights,
    samples: Vec<(Vec<u32>, Vec<f32>)>,
    held: &[HeldOut],
    p: &MtpParams,
    prog: &mut dyn super::graft::GraftProgress,
) -> Result<HeadWeights> {
    use super::train::{train, Sample, TrainParams, TrainProgress};
    struct Bridge<'a>(&'a mut dyn super::graft::GraftProgress);
    impl TrainProgress for Bridge<'_> {
        fn step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, agree: Option<f64>) {
            self.0.train(epoch, step, steps, loss, agree);
        }
    }
    let data: Vec<Sample> = samples.into_iter().map(|(tokens, f)| Sample { tokens, f }).collect();
    let held: Vec<Sample> = held.iter().map(|h| Sample { tokens: h.tokens.clone(), f: h.f.clone() }).collect();
    let vocab = vocab_order(tokens, model.cfg.n_vocab, p.train_vocab);
    let tp = TrainParams { epochs: p.epochs, lr: p.lr, reg: 1.0, depth: p.depth };
    train(model, start, &data, &held, &vocab, &tp, &mut Bridge(prog))
}

#[cfg(not(feature = "train"))]
fn train_head(
    _: &Model,
    _: &[u32],
    _: &HeadWeights,
    _: Vec<(Vec<u32>, Vec<f32>)>,
    _: &[HeldOut],
    _: &MtpParams,
    _: &mut dyn super::graft::GraftProgress,
) -> Result<HeadWeights> {
    bail!("this rllama was built without the 'train' feature")
}

/// The head as written in `w` (its tensors read back).
pub fn load_written(model: &Model, w: &GgufWriter) -> Result<Nextn> {
    let g = Arc::new(crate::gguf::GgufFile::from_bytes(w.to_bytes())?);
    Nextn::load(&g, &model.cfg, model.cfg.n_layer)
}

/// Top-1 of the model's output on normed rows: over the whole vocabulary,
/// or over a draft vocabulary (`out`: its rows of the output matrix and
/// their token ids), as drafting picks.
fn top1_normed(model: &Model, x: &[f32], out: Option<&DraftOutput>) -> Vec<usize> {
    let d = model.cfg.n_embd;
    let mut s = Scratch::default();
    let mut logits = Vec::new();
    let mut top = Vec::new();
    for rows in x.chunks(32 * d) {
        s.set_hidden(rows, rows.len() / d);
        model.head_normed(out.map_or(model.output(), |o| &o.0), &mut s, Rounding::Batch, &mut logits);
        let best = logits.chunks_exact(logits.len() / (rows.len() / d)).map(crate::decode::speculative::argmax);
        top.extend(best.map(|i| out.map_or(i, |o| o.1[i] as usize)));
    }
    top
}

/// The first `k` tokens of the draft vocabulary of `tokens` as drafting
/// cuts the output matrix (None: the whole vocabulary).
pub fn draft_output(model: &Model, tokens: &[u32], k: usize) -> Result<Option<DraftOutput>> {
    if k == 0 || k >= model.cfg.n_vocab {
        return Ok(None);
    }
    let ids = vocab_order(tokens, model.cfg.n_vocab, k);
    Ok(Some((output_rows(model, &ids)?, ids)))
}

/// A held-out chunk with what the model does on it, computed once.
pub struct HeldOut {
    pub tokens: Vec<u32>,
    /// The model's final hidden rows (before the output norm).
    pub f: Vec<f32>,
    /// Its rows after the output norm, one position later (as drafting
    /// pairs them; zeros at 0).
    pub(super) hprev: Vec<f32>,
    /// Its choice at each position.
    pub(super) want: Vec<usize>,
    /// Positions scored start here (a request's answer, after its prompt).
    pub(super) from: usize,
}

impl HeldOut {
    pub fn new(model: &Model, tokens: &[u32]) -> Result<HeldOut> {
        Self::from_rows(model, tokens, final_rows(model, tokens)?)
    }

    /// With the model's final hidden rows `f` of `tokens` already at hand.
    pub fn from_rows(model: &Model, tokens: &[u32], f: Vec<f32>) -> Result<HeldOut> {
        let d = model.cfg.n_embd;
        let n = tokens.len();
        if f.len() != n * d {
            bail!("held-out rows: {} values for {n} tokens", f.len());
        }
        let mut normed = vec![0f32; n * d];
        rms_norm_rows(&f, model.output_norm(), model.cfg.eps, &mut normed);
        let want = top1_normed(model, &normed, None);
        let mut hprev = vec![0f32; n * d];
        hprev[d..].copy_from_slice(&normed[..(n - 1) * d]);
        Ok(HeldOut { tokens: tokens.to_vec(), f, hprev, want, from: 0 })
    }

    /// Scored from position `from` on only.
    pub fn scored_from(self, from: usize) -> HeldOut {
        HeldOut { from: from.min(self.tokens.len()), ..self }
    }
}

/// Hits and tries per draft position on one chunk.
#[derive(Default, Clone)]
pub struct Counts {
    /// The head at position p (pair of F_{p-1} and x_p) against the
    /// model's choice at p; position k chains k - 1 times on the head's own
    /// rows with the text's tokens, against the model's choices at p + k - 1.
    pub hits: Vec<usize>,
    pub tried: Vec<usize>,
    /// Drafting's rounds replayed on the text (`REPORT_POSITIONS` drafts
    /// a round, the next round after the accepted drafts and the model's
    /// token): position k counted in rounds whose positions 1..k-1 stood.
    /// Rounds land on harder positions than an average over every
    /// position would (hits come in runs, and an accepting round skips
    /// them), so this, not `hits`, is what drafting meets.
    pub chain_hits: Vec<usize>,
    pub chain_tried: Vec<usize>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        for (a, b) in [(&mut self.hits, &o.hits), (&mut self.tried, &o.tried), (&mut self.chain_hits, &o.chain_hits), (&mut self.chain_tried, &o.chain_tried)] {
            a.resize(b.len().max(a.len()), 0);
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }
}

fn rates(hits: &[usize], tried: &[usize]) -> Vec<f64> {
    hits.iter().zip(tried).map(|(&h, &t)| h as f64 / t.max(1) as f64).collect()
}

/// Hits per draft position on one chunk (see `Counts`): the head's choices
/// over the draft vocabulary `out` (None: the whole vocabulary) against the
/// model's over the whole vocabulary.
pub fn agreement(model: &Model, head: &Nextn, held: &HeldOut, out: Option<&DraftOutput>) -> Result<Counts> {
    let d = model.cfg.n_embd;
    let (chunk, hprev, want) = (&held.tokens[..], &held.hprev[..], &held.want[..]);
    let n = chunk.len();
    let mut s = Scratch::default();
    let mut kv = head.new_cache(model, n + REPORT_POSITIONS)?;
    head.forward(model, chunk, hprev, 0, &mut kv, &mut s)?;
    let il = head.il;
    let truth = {
        let (k, v) = kv.rows_f16(il, 0, n);
        (k.to_vec(), v.to_vec())
    };
    let step1 = s.x.clone();
    let got1 = top1_normed(model, &step1, out);
    let mut c = Counts { hits: vec![0; REPORT_POSITIONS], chain_hits: vec![0; REPORT_POSITIONS], chain_tried: vec![0; REPORT_POSITIONS], ..Counts::default() };
    let from = held.from;
    c.hits[0] = got1.iter().zip(want).skip(from).filter(|(a, b)| a == b).count();
    // chained positions: from each p (its true pairs 0..=p in the cache),
    // scored at p + 1 on
    c.tried = vec![n - from; REPORT_POSITIONS];
    let starts = n.saturating_sub(REPORT_POSITIONS);
    let first = from.saturating_sub(1).min(starts);
    for t in c.tried.iter_mut().skip(1) {
        *t = starts - first;
    }
    // the chained rows first, their choices in batches after (one read of
    // the output matrix per batch, not per row)
    let mut chained = vec![Vec::new(); REPORT_POSITIONS];
    for p in first..starts {
        let mut row = step1[p * d..(p + 1) * d].to_vec();
        for (k, rows) in chained.iter_mut().enumerate().skip(1) {
            kv.remove_from(p + k, il..il + 1);
            head.forward(model, &chunk[p + k..p + k + 1], &row, p + k, &mut kv, &mut s)?;
            row = s.x.clone();
            rows.extend_from_slice(&row);
        }
        // the true pair at p + 1 again, for the next p: its keys and values
        // depend on the pair alone (batch-invariant in fast mode), so the
        // first pass's rows are put back rather than computed again
        kv.check_write(il, p + 1, 1)?;
        let kd = kv.k_dim;
        let vd = kv.v_dim;
        kv.store_f16(il, p + 1, 1, &truth.0[(p + 1) * kd..(p + 2) * kd], &truth.1[(p + 1) * vd..(p + 2) * vd]);
    }
    let got: Vec<Vec<usize>> = chained.iter().map(|rows| top1_normed(model, rows, out)).collect();
    for (i, p) in (first..starts).enumerate() {
        for k in 1..REPORT_POSITIONS {
            c.hits[k] += (got[k][i] == want[p + k]) as usize;
        }
    }
    // drafting's rounds: from the last prompt token on
    let mut p = first;
    while p < starts {
        let mut stood = 0;
        for k in 0..REPORT_POSITIONS {
            let hit = if k == 0 { got1[p] == want[p] } else { got[k][p - first] == want[p + k] };
            c.chain_tried[k] += 1;
            c.chain_hits[k] += hit as usize;
            if !hit {
                break;
            }
            stood += 1;
        }
        p += stood + 1;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_head_ff_is_half_in_whole_super_blocks() {
        // Qwen 1.5B, Qwen 0.5B, a width of whole blocks, a tiny model's
        assert_eq!(default_head_ff(8960), 4608);
        assert_eq!(default_head_ff(4864), 2560);
        assert_eq!(default_head_ff(1024), 512);
        assert_eq!(default_head_ff(64), 64);
    }

    #[test]
    fn held_out_answers_are_spread_over_both_kinds() {
        let held: Vec<usize> = (0..128).filter(|&i| held_answer(i, 128)).collect();
        assert_eq!(held.len(), 128 / HELD_ANSWERS_EVERY);
        // general requests (even places) and passage asks (odd) alike, early and late
        assert_eq!(held.iter().filter(|&&i| i % 2 == 0).count(), held.len() / 2);
        assert!(held[0] < 16 && *held.last().unwrap() >= 112);
        assert!((0..7).all(|i| !held_answer(i, 7)), "none below {HELD_ANSWERS_EVERY}");
    }
}
