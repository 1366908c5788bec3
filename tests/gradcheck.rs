//! The reference's analytic gradients against central finite differences of its own forward
//! (`lossconf gradcheck`), on a deterministic sample of the suite's cases: a check of the
//! gradient kernels that needs no recorded values, complementing the `/grad` trials.

use lossconf::gradcheck::{check_case, render, Point, Settings};
use lossconf::reference::{gradient_kernels, Reference};
use std::collections::BTreeMap;

#[test]
fn reference_gradients_agree_with_finite_differences() {
    let plan = lossconf::harness::load_plan(&lossconf::harness::default_root());
    let cases: Vec<_> = plan
        .checks
        .iter()
        .filter(|c| !c.backward && !c.case.wrt.is_empty())
        .map(|c| c.case.as_ref())
        .enumerate()
        .filter(|(i, _)| i % 5 == 0)
        .map(|(_, c)| c)
        .collect();
    let settings = Settings {
        max_elements: 4,
        ..Settings::default()
    };
    let reports: Vec<_> = cases
        .iter()
        .map(|c| check_case(&Reference, c, &settings, 7))
        .collect();
    let text = render(&reports, 20);
    let disagreements = reports.iter().flat_map(|r| r.disagreements()).count();
    assert_eq!(disagreements, 0, "{text}");
    // Every API with a gradient kernel is actually exercised, not skipped wholesale.
    let mut agreeing: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &reports {
        let n = r.points.iter().filter(|(_, _, p)| *p == Point::Agrees).count();
        *agreeing.entry(r.api.as_str()).or_default() += n;
    }
    for (api, _) in gradient_kernels() {
        assert!(
            agreeing.get(api).copied().unwrap_or(0) > 0,
            "{api} has a gradient kernel but no sampled element was checked\n{text}"
        );
    }
}
