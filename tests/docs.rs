//! Generated documentation must match specs, cases and the reference: a change that forgets
//! `lossconf report` fails here, like stale cases fail the conformance suite.

#[test]
fn generated_docs_are_up_to_date() {
    let root = lossconf::harness::default_root();
    let files = lossconf::report::build(&root).expect("docs build from specs and cases");
    assert!(
        files.keys().any(|p| p.starts_with("docs/losses")),
        "no family pages generated"
    );
    let stale = lossconf::report::stale(&root, &files);
    assert!(
        stale.is_empty(),
        "generated docs are stale; run `cargo run --release -- report`:\n  {}",
        stale
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}
