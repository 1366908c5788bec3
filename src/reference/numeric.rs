//! Numeric building blocks shared by the reference kernels: careful summation and the stable
//! elementary forms (log-sum-exp, softplus, log-sigmoid).

/// Sum with Neumaier's compensation: the error does not grow with the number of terms, so a
/// float32 mean over millions of elements is still correctly rounded once cast to float32.
pub fn sum<I: IntoIterator<Item = f64>>(values: I) -> f64 {
    let mut s = 0.0f64;
    let mut c = 0.0f64;
    for x in values {
        let t = s + x;
        if s.abs() >= x.abs() {
            c += (s - t) + x;
        } else {
            c += (x - t) + s;
        }
        s = t;
    }
    // Non-finite inputs make the compensation NaN; the plain sum carries the right inf/NaN.
    if s.is_finite() {
        s + c
    } else {
        s
    }
}

/// `log(sum(exp(x)))` without overflow; `-inf` for an empty slice or all `-inf`.
pub fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if m == f64::INFINITY {
        return f64::INFINITY;
    }
    m + sum(xs.iter().map(|&x| (x - m).exp())).ln()
}

/// `log(1 + exp(x))`, exact in both tails.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `log(sigmoid(x)) = -softplus(-x)`.
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensated_sum_recovers_what_naive_summation_loses() {
        let xs = [1e16, 1.0, -1e16, 1.0];
        assert_eq!(sum(xs), 2.0);
        assert_eq!(sum([f64::INFINITY, 1.0]), f64::INFINITY);
        assert!(sum([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }

    #[test]
    fn stable_forms_do_not_overflow() {
        assert_eq!(softplus(1e4), 1e4);
        assert_eq!(softplus(-1e4), 0.0);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(log_sigmoid(-1e4), -1e4);
    }
}
