//! rllama: GGUF language models on the CPU, speaking llama.cpp's language.

// Kernels walk several parallel arrays (scales, mins, lanes) by one index, as
// ggml's C does; iterator chains over four zipped arrays read worse.
#![allow(clippy::needless_range_loop)]
pub mod chat;
pub mod cli;
pub mod decode;
pub mod gguf;
pub mod heads;
pub mod kv_cache;
pub mod lora;
pub mod model;
pub mod ops;
pub mod parallel;
pub mod perplexity;
pub mod quant;
pub mod quantize_model;
pub mod sampling;
pub mod tmpfile;
pub mod tokenizer;
