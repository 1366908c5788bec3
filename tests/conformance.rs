//! Every case in `cases/` against the reference implementation.

fn main() -> std::process::ExitCode {
    lossconf::Harness::new(lossconf::reference::Reference)
        .expected_failures("expected-failures/reference.yaml")
        .run()
}
