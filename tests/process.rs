//! Process backends: a program that crashes, hangs or prints garbage fails only the call it was
//! answering, with a clear message, and is restarted for the next one.

use lossconf::backend::{Backend, Call, ErrorKind, Outcome};
use lossconf::process::ProcessBackend;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A shell backend that misbehaves in a fixed order across restarts (a counter file keeps the
/// count): garbage, crash, hang, wrong id, then well-behaved `unsupported` answers.
fn broken_backend(dir: &std::path::Path) -> String {
    let script = dir.join("broken.sh");
    let counter = dir.join("count");
    std::fs::write(&counter, "0").unwrap();
    std::fs::write(
        &script,
        format!(
            r#"
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
  case "$line" in
    *'"describe"'*) printf '{{"id":%s,"ok":{{"backend":"broken","apis":["torch.nn.functional.l1_loss"]}}}}\n' "$id"; continue;;
  esac
  n=$(cat {counter}); n=$((n+1)); echo $n > {counter}
  case $n in
    1) echo 'this is not json';;
    2) echo 'segfault imminent' >&2; exit 3;;
    3) sleep 5;;
    4) printf '{{"id":999,"ok":null}}\n';;
    *) printf '{{"id":%s,"unsupported":"not today"}}\n' "$id";;
  esac
done
"#,
            counter = counter.display()
        ),
    )
    .unwrap();
    format!("sh {}", script.display())
}

fn call() -> Call {
    Call {
        api: "torch.nn.functional.l1_loss".into(),
        args: BTreeMap::new(),
    }
}

fn backend_error(o: Outcome) -> String {
    match o {
        Outcome::Error(e) if e.kind == ErrorKind::Backend => e.message,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn misbehaving_process_fails_single_calls_and_is_restarted() {
    let dir = std::env::temp_dir().join(format!("lossconf-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = ProcessBackend::start(&broken_backend(&dir), Duration::from_millis(700)).unwrap();
    assert_eq!(b.name(), "broken");
    assert_eq!(
        b.apis(),
        Some(vec!["torch.nn.functional.l1_loss".to_string()])
    );

    let m = backend_error(b.forward(&call()));
    assert!(
        m.contains("garbled") && m.contains("this is not json"),
        "{m}"
    );
    let m = backend_error(b.forward(&call()));
    assert!(
        m.contains("exited") && m.contains("segfault imminent"),
        "{m}"
    );
    let started = Instant::now();
    let m = backend_error(b.forward(&call()));
    assert!(m.contains("no answer within"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout did not cut the hang"
    );
    let m = backend_error(b.forward(&call()));
    assert!(m.contains("does not match request id"), "{m}");
    assert_eq!(b.forward(&call()), Outcome::Unsupported("not today".into()));
}

#[test]
fn a_program_that_is_not_a_backend_is_refused_at_start() {
    let e = ProcessBackend::start("echo hello", Duration::from_secs(2))
        .err()
        .expect("refused");
    assert!(e.contains("describe"), "{e}");
}

#[test]
fn lossconf_serve_is_a_process_backend() {
    let cmd = format!("{} serve", env!("CARGO_BIN_EXE_lossconf"));
    let b = ProcessBackend::start(&cmd, Duration::from_secs(10)).unwrap();
    assert_eq!(b.name(), "reference");
    let apis = b.apis().unwrap();
    assert_eq!(apis, lossconf::reference::Reference.apis().unwrap());
    let direct = lossconf::reference::Reference;
    let plan = lossconf::harness::load_plan(&lossconf::harness::default_root());
    // Over the wire or in process, the reference answers the same, bit for bit (Debug prints
    // the shortest round-trip form of every float, and NaN as NaN).
    for check in plan.checks.iter().step_by(7).take(300) {
        let call = check.case.call();
        assert_eq!(
            format!("{:?}", b.forward(&call)),
            format!("{:?}", direct.forward(&call)),
            "{}",
            check.case.name
        );
    }
}
