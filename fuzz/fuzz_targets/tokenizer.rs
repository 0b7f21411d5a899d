//! Arbitrary bytes through a real byte-level BPE tokenizer (SmolLM2's, when
//! RLLAMA_FUZZ_MODEL names it; a SentencePiece one such as Gemma's works too)
//! or a small one built here: encode the bytes as they are (as the front-ends
//! do with prompts), decode, pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rllama::gguf::{GgufFile, GgufWriter, Value, ValueType};
use rllama::tokenizer::Tokenizer;
use std::sync::OnceLock;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        if let Some(p) = std::env::var_os("RLLAMA_FUZZ_MODEL") {
            let g = GgufFile::open(std::path::Path::new(&p)).expect("model");
            return Tokenizer::from_gguf(&g).expect("tokenizer");
        }
        let mut w = GgufWriter::new();
        w.set_str("tokenizer.ggml.model", "gpt2");
        let toks: Vec<Value> = ["a", "b", "ab", "Ġ", "Ċ", "<|im_end|>"].iter().map(|t| Value::String(t.to_string())).collect();
        w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, toks));
        w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, vec![Value::String("a b".into())]));
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(1), Value::I32(1), Value::I32(1), Value::I32(1), Value::I32(3)]));
        Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let t = tokenizer();
    for (bos, special) in [(true, true), (false, false)] {
        if let Ok(ids) = t.encode_bytes(data, bos, special) {
            let _ = t.decode(&ids, false);
            for &i in &ids {
                let _ = t.token_bytes(i, true);
            }
        }
    }
});
