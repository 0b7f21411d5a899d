//! Arbitrary chat templates and messages through the renderer: the first
//! line of the input is the template, the rest alternate user/assistant.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rllama::chat::{ChatTemplate, Message};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(2, '\n');
    let tmpl = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let msgs: Vec<Message> =
        rest.split('\u{1}').enumerate().map(|(i, c)| Message::new(["system", "user", "assistant"][i % 3], c)).collect();
    let t = ChatTemplate::from_source(tmpl, "<s>", "</s>", true);
    let _ = t.render(&msgs, true);
    let _ = t.render(&msgs, false);
});
