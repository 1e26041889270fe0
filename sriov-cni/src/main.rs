//! The `sriov` CNI plugin binary: reads the CNI environment and stdin, writes the result
//! or error JSON to stdout, logs to stderr or `logFile`.

use std::io::Read;

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let mut out = std::io::stdout().lock();
    let code = sriov_cni::cli::main_with(|k| std::env::var(k).ok(), &stdin, &mut out);
    std::process::exit(code);
}
