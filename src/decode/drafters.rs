//! Several drafters in one decode loop (`--spec-type a,b,...`): each round
//! takes the proposal of the first type that has one and that the length
//! policy finds worth verifying; acceptance is tracked per type (and per
//! acceptance class within a type), the target's batch costs are shared.

use super::early_exit::EarlyExit;
use super::mtp::MtpDrafter;
use super::ngram::{NgramLookup, NgramMapK, NgramMod, NgramSimple};
use super::speculative::{DraftCtx, DraftLength, DraftModel, Drafter};
use crate::heads::Heads;
use crate::model::Model;
use anyhow::{bail, Result};

/// The speculative types rllama runs, in llama.cpp's order of priority
/// (n-gram lookups first: they cost nothing; models last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecType {
    NgramSimple,
    NgramMapK,
    NgramMod,
    NgramLookup,
    EarlyExit,
    DraftMtp,
    DraftSimple,
}

/// llama.cpp's names (and rllama's `ngram-lookup`).
const NAMES: [(&str, SpecType); 7] = [
    ("ngram-simple", SpecType::NgramSimple),
    ("ngram-map-k", SpecType::NgramMapK),
    ("ngram-mod", SpecType::NgramMod),
    ("ngram-lookup", SpecType::NgramLookup),
    ("early-exit", SpecType::EarlyExit),
    ("draft-mtp", SpecType::DraftMtp),
    ("draft-simple", SpecType::DraftSimple),
];
/// llama.cpp types rllama does not run.
const UNSUPPORTED: [&str; 5] = ["draft-eagle3", "draft-dflash", "draft-dspark", "ngram-map-k4v", "ngram-cache"];
/// What `ngram` stands for: the n-gram type that measured best.
pub const BEST_NGRAM: SpecType = SpecType::NgramLookup;

impl SpecType {
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// A comma-separated list (`none` alone or among others adds nothing),
    /// sorted by priority, without repeats.
    pub fn parse_list(lists: &[String]) -> Result<Vec<SpecType>> {
        let mut out = Vec::new();
        for name in lists.iter().flat_map(|l| l.split(',')).map(str::trim) {
            match name {
                "none" | "" => {}
                "ngram" => out.push(BEST_NGRAM),
                _ => match NAMES.iter().find(|(n, _)| *n == name) {
                    Some((_, t)) => out.push(*t),
                    None if UNSUPPORTED.contains(&name) => bail!("error: --spec-type {name} is not supported by rllama (it runs: none, {})", known()),
                    None => bail!("error: unknown speculative type '{name}' (known: none, ngram, {})", known()),
                },
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn known() -> String {
    NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The n-gram flags (`--spec-ngram-*`), llama.cpp's defaults.
#[derive(Clone, Debug)]
pub struct NgramOpts {
    pub simple_n: usize,
    pub simple_m: usize,
    pub map_k_n: usize,
    pub map_k_m: usize,
    pub mod_n_match: usize,
    pub mod_n_min: usize,
    pub mod_n_max: usize,
    pub lookup_n_min: usize,
    pub lookup_n_max: usize,
    pub lookup_draft_max: usize,
    /// Most tokens an early-exit round drafts.
    pub early_exit_draft_max: usize,
    /// Most tokens a draft-mtp round drafts.
    pub mtp_draft_max: usize,
    /// A draft-mtp round stops at a token the head gives less probability
    /// (`--draft-p-min`, as for a draft model).
    pub mtp_p_min: f32,
    /// Draft vocabulary of heads (`--spec-draft-vocab`; 0: all; None:
    /// `DEFAULT_DRAFT_VOCAB`, or for an MTP head the size its graft
    /// weighed); a draft model drafts over it only when given.
    pub draft_vocab: Option<usize>,
}

impl Default for NgramOpts {
    fn default() -> Self {
        NgramOpts {
            simple_n: 12,
            simple_m: 48,
            map_k_n: 12,
            map_k_m: 48,
            mod_n_match: 24,
            mod_n_min: 48,
            mod_n_max: 64,
            lookup_n_min: 2,
            lookup_n_max: 6,
            lookup_draft_max: 16,
            early_exit_draft_max: 8,
            mtp_draft_max: 4,
            mtp_p_min: 0.0,
            draft_vocab: None,
        }
    }
}

pub use crate::heads::DEFAULT_DRAFT_VOCAB;

/// One drafter with its limits and counters.
pub struct Entry<'d> {
    pub d: Box<dyn Drafter + 'd>,
    slot0: usize,
    pub n_max: usize,
    pub n_min: usize,
    pub n_drafted: usize,
    pub n_accept: usize,
    pub n_proposals: usize,
    /// Per draft position i: rounds that drafted an i-th token, and rounds
    /// whose i-th token was accepted.
    pub by_pos: Vec<(usize, usize)>,
}

impl Entry<'_> {
    /// Share of its drafted tokens accepted, in percent.
    pub fn accept_pct(&self) -> f64 {
        100.0 * self.n_accept as f64 / self.n_drafted.max(1) as f64
    }

    /// `accepted by draft position: 1: 52.1% (100/192), 2: ...` (None before any round).
    pub fn by_position(&self) -> Option<String> {
        by_position(&self.by_pos)
    }
}

/// `accepted by draft position: ...` for (drafted, accepted) counts per
/// position (None when empty).
pub fn by_position(by_pos: &[(usize, usize)]) -> Option<String> {
    if by_pos.is_empty() {
        return None;
    }
    let cells: Vec<String> = by_pos.iter().enumerate().map(|(i, &(n, a))| format!("{}: {:.1}% ({a}/{n})", i + 1, 100.0 * a as f64 / n.max(1) as f64)).collect();
    Some(format!("accepted by draft position: {}", cells.join(", ")))
}

/// Drafters in priority order.
#[derive(Default)]
pub struct Drafters<'d> {
    list: Vec<Entry<'d>>,
    last: Option<usize>,
}

impl<'d> Drafters<'d> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The drafters of `types` (`draft` is the draft model's, for draft-simple).
    /// `heads`: the exit heads (and the exit layer asked for) for early-exit.
    pub fn from_types(
        types: &[SpecType],
        o: &NgramOpts,
        draft: Option<(DraftModel<'d>, usize, usize)>,
        heads: Option<(&'d Model, &'d Heads, Option<crate::heads::ExitSpec>)>,
        mtp: Option<&'d crate::model::nextn::Nextn>,
        cap: usize,
    ) -> Result<Self> {
        let mut ds = Drafters::new();
        let mut draft = draft;
        for &t in types {
            let (d, n_max, n_min): (Box<dyn Drafter + 'd>, usize, usize) = match t {
                SpecType::NgramSimple => (Box::new(NgramSimple::new(o.simple_n, o.simple_m)), o.simple_m, 0),
                SpecType::NgramMapK => (Box::new(NgramMapK::new(o.map_k_n, o.map_k_m)), o.map_k_m, 0),
                SpecType::NgramMod => (Box::new(NgramMod::new(o.mod_n_match, o.mod_n_max, o.mod_n_min)), o.mod_n_max, 0),
                SpecType::NgramLookup => (Box::new(NgramLookup::new(o.lookup_n_min, o.lookup_n_max)), o.lookup_draft_max, 0),
                SpecType::EarlyExit => match heads {
                    Some((m, h, layer)) => (Box::new(EarlyExit::new(m, h, layer, h.exit_draft_rows(o.draft_vocab))?), o.early_exit_draft_max, 0),
                    None => bail!("--spec-type early-exit needs exit heads (--spec-heads HEADS.gguf, written by rllama graft)"),
                },
                SpecType::DraftMtp => match (mtp, heads) {
                    (Some(head), h) => {
                        let (out, prior) = match h {
                            // the heads file's prior belongs to its own head
                            Some((m, hs, _)) => (
                                hs.draft_output(m, hs.mtp_draft_rows(o.draft_vocab))?,
                                if hs.mtp.as_ref().is_some_and(|x| std::ptr::eq(x, head)) { hs.mtp_accept.clone() } else { Vec::new() },
                            ),
                            None => (None, Vec::new()),
                        };
                        (Box::new(MtpDrafter::new(head, out, prior, o.mtp_p_min)?), o.mtp_draft_max, 0)
                    }
                    (None, _) => {
                        bail!("--spec-type draft-mtp needs a model with nextn layers or an MTP head (--spec-heads HEADS.gguf, written by rllama graft --mtp)")
                    }
                },
                SpecType::DraftSimple => match draft.take() {
                    Some((d, n_max, n_min)) => (Box::new(d), n_max, n_min),
                    None => continue,
                },
            };
            ds.push(d, n_max.min(cap), n_min.min(cap));
        }
        Ok(ds)
    }

    pub fn push(&mut self, d: Box<dyn Drafter + 'd>, n_max: usize, n_min: usize) {
        let slot0 = self.list.iter().map(|e| e.d.n_classes()).sum();
        self.list.push(Entry { d, slot0, n_max, n_min, n_drafted: 0, n_accept: 0, n_proposals: 0, by_pos: Vec::new() });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn entries(&self) -> &[Entry<'d>] {
        &self.list
    }

    /// The length policy: a slot per (drafter, class).
    pub fn length(&self) -> DraftLength {
        let slots: Vec<(usize, usize)> = self.list.iter().flat_map(|e| std::iter::repeat_n((e.n_max, e.n_min), e.d.n_classes())).collect();
        DraftLength::with_slots(&slots)
    }
}

impl Drafter for Drafters<'_> {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        for (i, e) in self.list.iter_mut().enumerate() {
            let v = e.d.propose(ctx, k.min(e.n_max))?;
            if !v.is_empty() {
                self.last = Some(i);
                return Ok(v);
            }
        }
        Ok(Vec::new())
    }

    fn draft_round(&mut self, ctx: &mut DraftCtx, len: &mut DraftLength, slot0: usize, room: usize) -> Result<(usize, Vec<u32>)> {
        self.last = None;
        for (i, e) in self.list.iter_mut().enumerate() {
            let (slot, v) = e.d.draft_round(ctx, len, slot0 + e.slot0, room)?;
            if !v.is_empty() {
                e.n_drafted += v.len();
                e.n_proposals += 1;
                self.last = Some(i);
                return Ok((slot, v));
            }
        }
        Ok((slot0, Vec::new()))
    }

    fn accepted(&mut self, drafted: usize, accepted: usize) {
        if let Some(i) = self.last.take() {
            let e = &mut self.list[i];
            e.n_accept += accepted;
            if e.by_pos.len() < drafted {
                e.by_pos.resize(drafted, (0, 0));
            }
            for (j, c) in e.by_pos[..drafted].iter_mut().enumerate() {
                c.0 += 1;
                c.1 += usize::from(j < accepted);
            }
            e.d.accepted(drafted, accepted);
        }
    }

    fn rollback(&mut self, n: usize) {
        for e in &mut self.list {
            e.d.rollback(n);
        }
    }

    fn ms_per_token(&self) -> Option<f64> {
        None
    }

    fn perf(&self) -> (f64, usize) {
        self.list.iter().map(|e| e.d.perf()).fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    fn n_classes(&self) -> usize {
        self.list.iter().map(|e| e.d.n_classes()).sum()
    }

    fn reuse(&self) -> Option<(usize, usize, &[f32])> {
        self.last.and_then(|i| self.list[i].d.reuse())
    }

    fn wants_hidden(&self) -> bool {
        self.list.iter().any(|e| e.d.wants_hidden())
    }

    fn name(&self) -> &str {
        "several"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_in_priority_order() {
        let t = SpecType::parse_list(&["draft-simple,ngram-mod".into(), "ngram-simple".into(), "none".into()]).unwrap();
        assert_eq!(t, vec![SpecType::NgramSimple, SpecType::NgramMod, SpecType::DraftSimple]);
        assert_eq!(SpecType::parse_list(&["none".into()]).unwrap(), vec![]);
        let e = SpecType::parse_list(&["ngram-cache".into()]).unwrap_err().to_string();
        assert!(e.starts_with("error: --spec-type ngram-cache is not supported"), "{e}");
        let e = SpecType::parse_list(&["bogus".into()]).unwrap_err().to_string();
        assert!(e.starts_with("error: unknown speculative type 'bogus'"), "{e}");
    }
}
