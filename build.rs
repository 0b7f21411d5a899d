// Records the git commit for `rllama bench`'s build_commit field (llama-bench prints its own).
fn main() {
    let out = std::process::Command::new("git").args(["rev-parse", "--short=7", "HEAD"]).output();
    if let Ok(o) = out {
        if o.status.success() {
            let c = String::from_utf8_lossy(&o.stdout).trim().to_string();
            println!("cargo:rustc-env=RLLAMA_GIT_COMMIT={c}");
        }
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
