//! Chat templates of the three models rendered for a 3-turn conversation
//! (expected strings written by hand from each template's text), and an
//! end-to-end conversation through `rllama cli -cnv` on stdin.
mod common;
use rllama::chat::{ChatTemplate, Message};
use rllama::gguf::GgufFile;
use rllama::tokenizer::Tokenizer;
use std::io::Write;
use std::process::{Command, Stdio};

fn conversation(system: bool) -> Vec<Message> {
    let mut m = Vec::new();
    if system {
        m.push(Message::new("system", "You are terse."));
    }
    m.push(Message::new("user", "Hi!"));
    m.push(Message::new("assistant", "Hello."));
    m.push(Message::new("user", "What is 2+2?"));
    m.push(Message::new("assistant", "4."));
    m.push(Message::new("user", "And 3+3?"));
    m
}

/// The ChatML turns every one of the three files ends up with (SmolLM2 and
/// Qwen store ChatML-style templates; Gemma's file has none, so llama.cpp's
/// ChatML fallback applies).
fn chatml(system: &str) -> String {
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n\
         <|im_start|>assistant\n"
    )
}

fn template(file: &str, choice: Option<&str>) -> Option<ChatTemplate> {
    let path = common::model(file)?;
    let g = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    Some(ChatTemplate::new(choice, &g, &tok).unwrap())
}

#[test]
fn smollm2_template() {
    let Some(t) = template(common::SMOLLM2, None) else {
        return;
    };
    assert_eq!(t.render(&conversation(true), true).unwrap(), chatml("You are terse."));
    // without a system message the template supplies its own
    let want = chatml("You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    assert_eq!(t.render(&conversation(false), true).unwrap(), want);
}

#[test]
fn qwen_template() {
    let Some(t) = template(common::QWEN, None) else {
        return;
    };
    assert_eq!(t.render(&conversation(true), true).unwrap(), chatml("You are terse."));
    let want = chatml("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    assert_eq!(t.render(&conversation(false), true).unwrap(), want);
    // no generation prompt: ends after the last user turn
    let s = t.render(&conversation(true), false).unwrap();
    assert!(s.ends_with("And 3+3?<|im_end|>\n"), "{s:?}");
}

#[test]
fn gemma_templates() {
    let Some(t) = template(common::GEMMA, None) else {
        return;
    };
    assert_eq!(t.render(&conversation(true), true).unwrap(), chatml("You are terse."));
    // the built-in gemma turn format; the leading <bos> is left to the tokenizer
    let t = template(common::GEMMA, Some("gemma")).unwrap();
    assert_eq!(
        t.render(&conversation(true), true).unwrap(),
        "<start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4.<end_of_turn>\n\
         <start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn template_from_the_command_line() {
    let Some(t) = template(common::SMOLLM2, Some("{% for m in messages %}[{{ m.role }}:{{ m.content | upper }}]{% endfor %}")) else {
        return;
    };
    assert_eq!(t.render(&[Message::new("user", "hi")], true).unwrap(), "[user:HI]");
}

fn perf_count(stderr: &str, what: &str) -> usize {
    let line = stderr.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} line in {stderr}"));
    let after = line.split('/').nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Two user turns on stdin: the second turn evaluates only the tokens the
/// first did not (KV cache kept), and both replies end at the end-of-turn
/// token, well before the -n limit.
#[test]
fn two_turns_reuse_the_cache_and_stop_at_end_of_turn() {
    let Some(path) = common::model(common::SMOLLM2) else {
        return;
    };
    let mut child = Command::new(common::bin())
        .args(["cli", "-m", path.to_str().unwrap(), "-cnv", "--temp", "0", "-n", "200", "-t", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Say hello.\nSay goodbye.\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.matches("[ Prompt:").count(), 2, "{stdout}");
    assert!(stdout.contains("> Say goodbye.\n"), "{stdout}");
    assert!(stdout.trim_end().ends_with("Exiting..."), "{stdout}");

    // tokens of the whole conversation at the second turn
    let g = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let t = ChatTemplate::new(None, &g, &tok).unwrap();
    let first = tok.encode(&t.render(&[Message::new("user", "Say hello.")], true).unwrap(), true, true).unwrap();
    let prompt_tokens = perf_count(&stderr, "prompt eval time");
    let sampled = perf_count(&stderr, "sampling time");
    let evaluated = perf_count(&stderr, "  eval time");
    // each reply's last sampled token is the end of turn, never evaluated
    assert_eq!(sampled, evaluated + 2, "{stderr}");
    assert!(evaluated < 2 * 200, "{stderr}");
    // turn 2 re-renders turn 1 + reply + the new message; with the cache kept it
    // evaluates only what follows the reply
    let reply1 = stdout.split("> Say goodbye.").next().unwrap();
    let reply1 = reply1.rsplit("Say hello.\n").next().unwrap().split("\n\n[ Prompt:").next().unwrap().trim_end_matches('\n');
    let msgs = [Message::new("user", "Say hello."), Message::new("assistant", reply1), Message::new("user", "Say goodbye.")];
    let second = tok.encode(&t.render(&msgs, true).unwrap(), true, true).unwrap();
    assert!(
        prompt_tokens < first.len() + second.len() - first.len() / 2,
        "prompt tokens {prompt_tokens}: turn 1 {} + turn 2 {} suggests the cache was not reused",
        first.len(),
        second.len()
    );
    assert!(prompt_tokens <= second.len(), "prompt tokens {prompt_tokens} > whole conversation {}", second.len());
}

fn chat(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(common::bin()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Lines of a chat's stdout without the per-turn timing lines.
fn text_of(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout).lines().filter(|l| !l.starts_with("[ Prompt:")).collect::<Vec<_>>().join("\n")
}

/// Chat runs on the same Generator as completion: with a draft model (here
/// the model itself) the text is byte-identical to the plain chat, drafts
/// were tried, and the speculative statistics block follows at exit.
#[test]
fn chat_with_a_draft_model_prints_the_same_text() {
    let Some(path) = common::model(common::SMOLLM2) else {
        return;
    };
    let m = path.to_str().unwrap();
    let base = ["cli", "-m", m, "-cnv", "--temp", "0", "-n", "48", "-t", "2", "--ignore-eos"];
    let input = b"Name three colours.\nAnd three animals.\n";
    let plain = chat(&base, input);
    let spec = chat(&[&base[..], &["-md", m]].concat(), input);
    assert!(plain.status.success() && spec.status.success(), "{}", String::from_utf8_lossy(&spec.stderr));
    assert_eq!(text_of(&spec.stdout), text_of(&plain.stdout));
    let err = String::from_utf8_lossy(&spec.stderr);
    let drafted: usize = err.lines().find_map(|l| l.strip_prefix("n_drafted = ")).unwrap_or_else(|| panic!("no statistics: {err}")).trim().parse().unwrap();
    assert!(drafted > 0, "no drafts tried: {err}");
    assert!(err.contains("n_accept  = "), "{err}");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("n_drafted"));
}

/// /regen and /clear on the Generator: a greedy regenerated reply equals the
/// first one, and after /clear the same question gets the same answer.
#[test]
fn regen_and_clear_replay_greedy_replies() {
    let Some(path) = common::model(common::SMOLLM2) else {
        return;
    };
    let out =
        chat(&["cli", "-m", path.to_str().unwrap(), "-cnv", "--temp", "0", "-n", "24", "-t", "2", "--no-show-timings"], b"Say hi.\n/regen\n/clear\nSay hi.\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = stdout.split("\n> ").skip(1).map(|t| t.split_once('\n').map(|x| x.1).unwrap_or("").trim()).collect();
    // turns: "Say hi." reply, "/regen" reply, "/clear" notice, "Say hi." reply
    assert_eq!(replies.len(), 5, "{stdout}");
    assert!(!replies[0].is_empty(), "{stdout}");
    assert_eq!(replies[0], replies[1], "{stdout}");
    assert!(replies[2].starts_with("Chat history cleared."), "{stdout}");
    assert_eq!(replies[0], replies[3], "{stdout}");
}

/// A non-ASCII reverse prompt ends the reply without a panic.
#[test]
fn non_ascii_reverse_prompt() {
    let Some(path) = common::model(common::SMOLLM2) else {
        return;
    };
    let out = chat(
        &["cli", "-m", path.to_str().unwrap(), "-cnv", "--temp", "0", "-n", "40", "-t", "2", "-r", "é", "-r", "€"],
        "Écris «café» en français.\n".as_bytes(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
}

/// A reverse prompt matched while the UTF-8 stream still holds the first
/// byte of the next character: the reply is cut at a character boundary
/// (cutting `reverse.len()` bytes off the finished text, as chat did, lands
/// inside the replacement character and panicked).
#[test]
fn reverse_prompt_cut_with_pending_utf8_bytes() {
    use rllama::cli::generate::{stream_reply, Stop};
    use rllama::decode::generator::Generator;
    use rllama::decode::speculative::DraftLength;
    use rllama::decode::Session;
    use rllama::gguf::{Value, ValueType};
    use rllama::sampling::{Sampler, SamplerParams};
    use rllama::tokenizer::Utf8Stream;
    // byte-level BPE pieces: token 5 is the bytes C3 A9 C3 ("é" and the first byte of another character)
    let pieces = ["a", "b", "c", "d", "e", "Ã©Ã", "f", "g"];
    let m = common::tiny_model_with(7, |w| {
        w.set_str("tokenizer.ggml.model", "gpt2");
        w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, pieces.iter().map(|p| Value::String(p.to_string())).collect()));
        w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, vec![]));
    });
    let tok = Tokenizer::from_gguf(&m.g).unwrap();
    let params = SamplerParams { temp: 0.0, seed: 1, ..Default::default() };
    let mut gen = Generator::new(Session::new(&m, 64, 64).unwrap(), Sampler::new(params), None, DraftLength::new(0, 0));
    gen.banned = (0..8).filter(|&t| t != 5).collect();
    gen.prompt(&[1, 2]).unwrap();
    let reverse = vec!["é".to_string()];
    let r = stream_reply(&mut gen, &tok, Utf8Stream::default(), 4, &reverse, &|| false).unwrap();
    assert_eq!(r.stop, Stop::Reverse(0));
    assert_eq!(r.text, "é\u{FFFD}", "the pending byte is flushed as a replacement character");
    assert_eq!(&r.text[..r.cut], "");
    assert!(!r.text.is_char_boundary(r.text.len() - reverse[0].len()), "the old cut would have split a character");
}

/// llama.cpp's built-in template names render as its llama-chat.cpp formats
/// (expected strings: llama.cpp's tests/test-chat-template.cpp conversation
/// and outputs; zephyr written from the format); unknown names are refused.
#[test]
fn builtin_template_names_like_llama_cpp() {
    use rllama::chat::builtin::builtin;
    let conv = [
        Message::new("system", "You are a helpful assistant"),
        Message::new("user", "Hello"),
        Message::new("assistant", "Hi there"),
        Message::new("user", "Who are you"),
        Message::new("assistant", "   I am an assistant   "),
        Message::new("user", "Another question"),
    ];
    let cases = [
        ("llama2", "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]"),
        ("mistral-v7", "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]"),
        ("deepseek", "You are a helpful assistant### Instruction:\nHello\n### Response:\nHi there\n<|EOT|>\n### Instruction:\nWho are you\n### Response:\n   I am an assistant   \n<|EOT|>\n### Instruction:\nAnother question\n### Response:\n"),
        ("vicuna", "You are a helpful assistant\n\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: Who are you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\nASSISTANT:"),
        ("command-r", "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am an assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Another question<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
        ("phi3", "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"),
        ("zephyr", "<|system|>\nYou are a helpful assistant<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\nHi there<|endoftext|>\n<|user|>\nWho are you<|endoftext|>\n<|assistant|>\n   I am an assistant   <|endoftext|>\n<|user|>\nAnother question<|endoftext|>\n<|assistant|>\n"),
    ];
    for (name, want) in cases {
        let t = ChatTemplate::from_source(builtin(name).unwrap(), "", "", false);
        assert_eq!(t.render(&conv, true).unwrap(), want, "{name}");
    }
    // a name that is not built in is an error, not a one-word template
    let Some(path) = common::model(common::SMOLLM2) else { return };
    for bad in ["zephyrr", "llama-2", "foo"] {
        let out =
            Command::new(common::bin()).args(["cli", "-m", path.to_str().unwrap(), "-cnv", "--chat-template", bad, "-p", "Hi", "-n", "2"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
        assert!(err.contains("the supplied chat template is not supported") && err.trim().lines().count() == 1, "{bad}: {err}");
    }
}
