//! The lossconf suite against lossconf-candle: exactly the glue the lossconf README shows.
use lossconf_candle::Candle;

fn main() -> std::process::ExitCode {
    lossconf::Harness::new(Candle)
        .expected_failures("tests/lossconf-xfail.yaml") // [{trial, reason, upstream?}]
        .run()
}
