//! Per-architecture forward passes over a batch of tokens with a KV cache, as
//! parts (embed, blocks over a layer range, head) that drafters and adapters
//! can use one by one.
mod config;
mod debug;
mod llama;
pub mod nextn;
pub mod weights;

pub use config::{Config, FfnAct};
pub use llama::{Model, Rounding, Scratch};

/// Which positions of a batch to return logits for.
#[derive(Clone, Debug, PartialEq)]
pub enum Outputs {
    Last,
    All,
    Rows(Vec<usize>),
}

impl Outputs {
    pub fn rows(&self, n: usize) -> Vec<usize> {
        match self {
            Outputs::Last => vec![n - 1],
            Outputs::All => (0..n).collect(),
            Outputs::Rows(r) => r.clone(),
        }
    }
}
