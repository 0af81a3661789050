//! A fuzzing harness for ingot-core that runs on the stable toolchain (cargo-fuzz needs
//! nightly): mutational fuzzing from seed inputs, with outcome feedback instead of coverage
//! (an input whose result falls in a class not seen before joins the corpus).
//!
//! `ingot-fuzz TARGET SECONDS [SEED]` runs one target for SECONDS and prints one line of
//! figures. A panic is caught, its input saved under `fuzz/crashes/` and counted; an input
//! running longer than [`TIMEOUT`] is saved and ends the run (exit 2); an abort (out of memory,
//! stack overflow) kills the process, and `scripts/fuzz.sh` saves the input it was running,
//! which is always in `fuzz/crashes/TARGET.current`.

mod front;
mod mutate;
mod seeds;
mod targets;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutate::{Mutator, Rng};

/// Longest a single input may run.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest corpus kept in memory per target.
const MAX_CORPUS: usize = 2000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: ingot-fuzz TARGET SECONDS [SEED]; targets: {}", targets::NAMES.join(", "));
        std::process::exit(64)
    };
    let (Some(name), Some(seconds)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok())) else { usage() };
    let Some(target) = targets::by_name(name) else { usage() };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crashes = root.join("crashes");
    std::fs::create_dir_all(&crashes).unwrap_or_else(|e| panic!("{}: {e}", crashes.display()));

    let mut corpus = seeds::load(name, &root.join("corpus").join(name));
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let seeds = corpus.len();
    let current = File::create(crashes.join(format!("{name}.current"))).expect("current-input file");
    let started = Arc::new(AtomicU64::new(u64::MAX));
    let epoch = Instant::now();
    watchdog(name.clone(), crashes.clone(), epoch, started.clone());

    let last_panic = Arc::new(Mutex::new(String::new()));
    let hook_panic = last_panic.clone();
    panic::set_hook(Box::new(move |info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        *hook_panic.lock().unwrap_or_else(|e| e.into_inner()) = format!("{info}{at}");
    }));

    let mut rng = Rng::new(seed);
    let mutator = Mutator::new(target.dictionary, target.max_len);
    let mut classes = std::collections::HashSet::new();
    let (mut execs, mut crashes_found) = (0u64, 0u64);
    let clock = Instant::now();
    let deadline = clock + Duration::from_secs(seconds);
    let mut i = 0;
    while Instant::now() < deadline {
        // Every seed once as it is, then mutants.
        let input = if i < seeds { corpus[i].clone() } else { mutator.mutate(&mut rng, &corpus) };
        i += 1;
        let _ = current.set_len(0).and_then(|()| current.write_all_at(&input, 0));
        started.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        started.store(u64::MAX, Ordering::SeqCst);
        execs += 1;
        match outcome {
            Ok(class) => {
                if classes.insert(class) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(_) => {
                crashes_found += 1;
                let message = last_panic.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let path = save(&crashes, name, "panic", &input);
                eprintln!("{name}: panic, input saved to {}: {message}", path.display());
            }
        }
    }
    let secs = clock.elapsed().as_secs_f64();
    println!(
        "{name}: {execs} executions in {secs:.0} s ({:.0}/s), {seeds} seeds, corpus {}, outcome classes {}, crashes {crashes_found}",
        execs as f64 / secs,
        corpus.len(),
        classes.len()
    );
    std::process::exit(if crashes_found > 0 { 1 } else { 0 });
}

/// Saves a crashing input as `fuzz/crashes/TARGET-KIND-HASH`.
fn save(dir: &Path, name: &str, kind: &str, input: &[u8]) -> PathBuf {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{name}-{kind}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Ends the process when one input runs past [`TIMEOUT`], keeping that input.
fn watchdog(name: String, crashes: PathBuf, epoch: Instant, started: Arc<AtomicU64>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let at = started.load(Ordering::SeqCst);
        if at != u64::MAX && epoch.elapsed().as_millis() as u64 > at + TIMEOUT.as_millis() as u64 {
            let input = std::fs::read(crashes.join(format!("{name}.current"))).unwrap_or_default();
            let path = save(&crashes, &name, "timeout", &input);
            eprintln!("{name}: an input ran over {TIMEOUT:?}, saved to {}", path.display());
            std::process::exit(2);
        }
    });
}
