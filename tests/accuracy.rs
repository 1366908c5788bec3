//! Accuracy cases (accuracy/cases.yaml) against the reference: one trial `accuracy/<case>` each,
//! passing when the reference is within 1 ULP of the exact value tools/exact.py computed.

use libtest_mimic::{Arguments, Trial};
use lossconf::accuracy;
use lossconf::reference::Reference;

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let root = lossconf::harness::default_root();
    let trials = match accuracy::load(&root) {
        Err(e) => vec![Trial::test("accuracy/lossconf/load", move || Err(e.into()))],
        Ok(suite) => suite
            .checks
            .into_iter()
            .map(|(case, expected)| {
                Trial::test(format!("accuracy/{}", case.name), move || {
                    let expected =
                        expected.map_err(|e| format!("case: accuracy/{}\n{e}", case.name))?;
                    let m = accuracy::measure(&Reference, &case, &expected)
                        .map_err(|e| format!("case: accuracy/{}\n{e}", case.name))?;
                    if m.passed() {
                        Ok(())
                    } else {
                        Err(m.report(&case).into())
                    }
                })
                .with_kind("accuracy")
            })
            .collect(),
    };
    libtest_mimic::run(&args, trials).exit_code()
}
