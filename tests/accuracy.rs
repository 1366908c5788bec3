//! Accuracy cases (accuracy/cases.yaml) against the reference: one trial `accuracy/<case>` each,
//! passing when the reference is within 1 ULP of the exact value tools/exact.py computed.

use libtest_mimic::{Arguments, Trial};
use lossconf::accuracy;
use lossconf::reference::Reference;

/// Accuracy cases the reference is known to miss, with why: they must fail (an entry that starts
/// passing fails loudly), and they keep issue 7 open.
const KNOWN_MISSES: &[(&str, &str)] = &[];

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
                    let known = KNOWN_MISSES.iter().find(|(n, _)| *n == case.name);
                    match (m.passed(), known) {
                        (true, None) => Ok(()),
                        (false, None) => Err(m.report(&case).into()),
                        (false, Some(_)) => Ok(()),
                        (true, Some((_, why))) => Err(format!(
                            "accuracy/{} is listed as a known miss ({why}) but passes now: remove it from KNOWN_MISSES",
                            case.name
                        )
                        .into()),
                    }
                })
                .with_kind("accuracy")
            })
            .collect(),
    };
    libtest_mimic::run(&args, trials).exit_code()
}
