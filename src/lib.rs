//! rllama: GGUF language models on the CPU, speaking llama.cpp's language.
pub mod gguf;
pub mod quant;
pub mod tokenizer;
pub mod cli;
