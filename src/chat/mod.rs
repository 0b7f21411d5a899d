//! Chat support shared by the front-ends: templates and the conversation state
//! (messages, and which tokens the KV cache already holds).
pub mod builtin;
pub mod template;

pub use template::{ChatTemplate, Message};

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
