fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = rllama::cli::main_with_args(argv) {
        let msg = format!("{e:#}");
        let msg = if msg.starts_with("error") { msg } else { format!("error: {msg}") };
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
