//! Arbitrary bytes as a GGUF file: parse, config, tokenizer, model load.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = rllama::gguf::GgufFile::from_bytes(data.to_vec()) else { return };
    let _ = rllama::model::Config::from_gguf(&g);
    let _ = rllama::tokenizer::Tokenizer::from_gguf(&g);
    if let Ok(m) = rllama::model::Model::from_gguf(Arc::new(g)) {
        if let Ok(mut kv) = m.new_cache(4) {
            let _ = m.forward(&[0], &mut kv, &rllama::model::Outputs::Last);
        }
    }
});
