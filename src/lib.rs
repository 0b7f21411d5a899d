//! rllama: GGUF language models on the CPU, speaking llama.cpp's language.
pub mod chat;
pub mod cli;
pub mod decode;
pub mod gguf;
pub mod kv_cache;
pub mod model;
pub mod ops;
pub mod parallel;
pub mod perplexity;
pub mod quant;
pub mod quantize_model;
pub mod sampling;
pub mod tokenizer;
