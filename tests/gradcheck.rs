//! The reference's analytic gradients against central finite differences of its own forward
//! (`lossconf gradcheck`), on a deterministic sample of the suite's cases: a check of the
//! gradient kernels that needs no recorded values, complementing the `/grad` trials.

use lossconf::gradcheck::{check_case, render, Point, Settings};
use lossconf::reference::{gradient_kernels, Reference};
use std::collections::BTreeMap;

/// Cases where the *framework's* backward is not the derivative of its forward, which the
/// reference follows on purpose (the `/grad` trials check that): finite differences disagree.
const NOT_THE_DERIVATIVE: &[(&str, &str)] = &[
    (
        "cross_entropy/tf_softmax/",
        "TF's fused SoftmaxCrossEntropyWithLogits gradient softmax*sum(labels) - labels assumes labels sum to 1 per row",
    ),
    (
        "cross_entropy/keras_cce/",
        "Keras CategoricalCrossentropy on probabilities renormalises y_pred and clips; TF's gradient through the clip and the fused op",
    ),
    (
        "ctc_loss/keras/",
        "Keras CTC computes in float32 even with dtype='float64' (float64 differences see float32 steps), and TF's CTC gradient is finite for an infeasible alignment whose loss is constant",
    ),
    (
        "ctc_loss/tf/infeasible",
        "TF's CTC gradient is finite for an infeasible alignment whose loss is constant",
    ),
    (
        "weighted_cross_entropy_with_logits/tf/",
        "at a logit of exactly 0 TF's Abs and Relu gradients are 0, which drops the softplus term of a smooth loss (torch gives the derivative)",
    ),
    (
        "hinge/hinge/batch_wide_conversion/",
        "Keras Hinge maps y_true from {0, 1} to {-1, 1} only when every label is 0 or 1: a perturbed label switches the conversion off, so the loss is discontinuous in y_true there (TF's gradient is the converted branch's)",
    ),
    (
        "hinge/squared_hinge/batch_wide_conversion/",
        "Keras SquaredHinge maps y_true from {0, 1} to {-1, 1} only when every label is 0 or 1: a perturbed label switches the conversion off, so the loss is discontinuous in y_true there",
    ),
    (
        "ctc_loss/torch/",
        "PyTorch's CTC backward returns exp(log_probs) - posterior, the gradient for the logits before log_softmax, not d loss / d log_probs",
    ),
];

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
    let unexplained: Vec<_> = reports
        .iter()
        .filter(|r| {
            !NOT_THE_DERIVATIVE
                .iter()
                .any(|(p, _)| r.case.starts_with(p))
        })
        .cloned()
        .collect();
    let disagreements = unexplained.iter().flat_map(|r| r.disagreements()).count();
    assert_eq!(disagreements, 0, "{}", render(&unexplained, 20));
    // Every API with a gradient kernel is actually exercised, not skipped wholesale.
    let mut agreeing: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &reports {
        let n = r
            .points
            .iter()
            .filter(|(_, _, p)| *p == Point::Agrees)
            .count();
        *agreeing.entry(r.api.as_str()).or_default() += n;
    }
    // tf.nn.ctc_loss rejects float64 inputs, so a float64 check cannot run it; torch's CTC
    // backward is not the derivative of its forward (NOT_THE_DERIVATIVE).
    for (api, _) in gradient_kernels()
        .into_iter()
        .filter(|(api, _)| !["tf.nn.ctc_loss", "torch.nn.functional.ctc_loss"].contains(api))
    {
        assert!(
            agreeing.get(api).copied().unwrap_or(0) > 0,
            "{api} has a gradient kernel but no sampled element was checked\n{text}"
        );
    }
}
