//! Debug output of intermediate tensors (compare with llama-eval-callback and
//! scripts/tensor-diff).

/// With RLLAMA_DEBUG_SUMS set, print each intermediate's sum (compare with
/// llama-eval-callback). The variable is read once.
/// Debug output of an intermediate tensor (RLLAMA_DUMP_DIR / RLLAMA_DEBUG_SUMS);
/// the name is built only when one of them is set.
pub fn dbg_sum(name: impl Fn() -> String, v: &[f32]) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static DIR: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| std::env::var_os("RLLAMA_DUMP_DIR"));
    let on = *ON.get_or_init(|| std::env::var_os("RLLAMA_DEBUG_SUMS").is_some());
    if dir.is_none() && !on {
        return;
    }
    let name = name();
    if let Some(dir) = dir {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let _ = std::fs::write(std::path::Path::new(dir).join(format!("{name}.bin")), bytes);
    }
    if on {
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        eprintln!("{name:>20} sum = {s:.6}  first = {:?}", &v[..3.min(v.len())]);
    }
}
