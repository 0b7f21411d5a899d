fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = rllama::cli::main_with_args(argv) {
        let msg = format!("{e:#}");
        let msg = if msg.starts_with("error") { msg } else { format!("error: {msg}") };
        // one line, and no raw control bytes from a file or an argument
        let msg: String = msg.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect();
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
