//! The lossconf suite against lossconf-burn: exactly the glue the lossconf README shows.
use lossconf_burn::Burn;

fn main() -> std::process::ExitCode {
    lossconf::Harness::new(Burn)
        .expected_failures("tests/lossconf-xfail.yaml") // [{trial, reason, upstream?}]
        .run()
}
