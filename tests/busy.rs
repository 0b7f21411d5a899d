//! More threads than cores: a warning and graceful slowdown, never a hang
//! (waiting team threads yield their core when the team is oversubscribed).
mod common;
use std::process::Command;
use std::time::{Duration, Instant};

fn timed(args: &[&str]) -> (Duration, String) {
    let t0 = Instant::now();
    let out = Command::new(common::bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    (t0.elapsed(), err)
}

#[test]
fn more_threads_than_cores_finishes_in_bounded_time() {
    let Some(m) = common::model(common::QWEN) else { return };
    let m = m.to_str().unwrap();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let run = |t: usize| timed(&["cli", "-m", m, "-p", "The capital of France is", "-n", "24", "--temp", "0", "-t", &t.to_string()]);
    let (base, _) = run(cores);
    let (over, err) = run(cores * 4);
    assert!(err.contains("warning:") && err.contains("threads requested"), "{err}");
    // generous: catches hangs (seconds per token), not noise
    let bound = base * 10 + Duration::from_secs(5);
    assert!(over < bound, "-t {} took {over:?}, -t {cores} {base:?}", cores * 4);
}
