//! TEST ONLY (cargo feature `test-fake`): the `sriov` plugin with the file-backed VF fake,
//! selected by `SRIOV_CNI_FAKE_VF_STATE=<file>` (netlink when it is unset). The test suites
//! and the demo run this; the shipped `sriov` refuses ADD while that variable is set.

use std::io::Read;

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let mut out = std::io::stdout().lock();
    let code = sriov_cni::cli::main_on(
        sriov_cni::cli::Backend::FakeWhenSet,
        |k| std::env::var(k).ok(),
        &stdin,
        &mut out,
    );
    std::process::exit(code);
}
