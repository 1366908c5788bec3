//! Branch-free `f64` elementary functions that the compiler can vectorise, and the summation
//! and dispatch helpers the fast kernels share.
//!
//! `exp` and `log1p` here are accurate to a few units in the last place of `f64` (relative error
//! below 1e-15), far below what a float32 (or even a float64 at the suite's tolerances) result
//! can show, and written without branches or library calls so that a loop over a slice becomes
//! SIMD code. [`simd!`] compiles a loop twice, for the baseline target and for AVX2+FMA, and
//! picks one at run time.

/// `2^52 + 2^51`: adding it to a float of magnitude below `2^51` rounds to an integer and leaves
/// that integer in the low bits of the representation.
pub(crate) const MAGIC: f64 = 6755399441055744.0;
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// `ln 2` split so that `k * LN2_HI` is exact for `|k| < 2^11` (Cody and Waite).
const LN2_HI: f64 = 6.931_471_803_691_238_164_9e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

/// `2^k` for an integral `k` in `[-1022, 1023]`, built from the exponent bits.
#[inline(always)]
fn pow2i(k: f64) -> f64 {
    f64::from_bits((k + (MAGIC + 1023.0)).to_bits() << 52)
}

/// The Taylor coefficients of `e^r`, `1/13!` down to `1/0!`, highest degree first.
pub(crate) const EXP_C: [f64; 14] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `e^x`, relative error below 1e-15 over the whole range; 0 below -745.2, `inf` above 709.8,
/// NaN for NaN. No branches: comparisons compile to selects.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // 14 terms of the series for |r| <= ln(2)/2: the next is below 4e-18 relative.
    exp_terms::<14>(x)
}

/// [`exp`] from 10 terms of the series: relative error below 1e-11 (the remainder `r^10 / 10!`
/// at `|r| = ln(2) / 2` is 6.9e-12, times at most `e^(ln(2) / 2)`). For float32 results made
/// of positive terms, where it is 4 orders of magnitude below half an ulp.
#[inline(always)]
pub fn exp_short(x: f64) -> f64 {
    exp_terms::<10>(x)
}

#[inline(always)]
fn exp_terms<const N: usize>(x: f64) -> f64 {
    // Clamp with comparisons (a NaN fails both and stays NaN).
    let x = if x < -746.0 { -746.0 } else { x };
    let x = if x > 710.0 { 710.0 } else { x };
    let k = (x * LOG2E + MAGIC) - MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = horner(&EXP_C[14 - N..], r);
    // 2^k in two factors so that neither overflows nor goes subnormal before the product.
    let k1 = (k * 0.5 + MAGIC) - MAGIC;
    let k2 = k - k1;
    p * pow2i(k1) * pow2i(k2)
}

/// `c[0] r^(n-1) + c[1] r^(n-2) + ... + c[n-1]` by Horner's rule, without fused multiply-adds
/// (the callers pass constant-length slices, so the loop unrolls).
#[inline(always)]
fn horner(c: &[f64], r: f64) -> f64 {
    let mut p = c[0];
    for &ci in &c[1..] {
        p = p * r + ci;
    }
    p
}

/// `1 / (2k + 1)` for `k` = 18 down to 1: the series of `atanh(s) / s - 1` in `z = s^2`.
const ATANH_C: [f64; 18] = [
    1.0 / 37.0,
    1.0 / 35.0,
    1.0 / 33.0,
    1.0 / 31.0,
    1.0 / 29.0,
    1.0 / 27.0,
    1.0 / 25.0,
    1.0 / 23.0,
    1.0 / 21.0,
    1.0 / 19.0,
    1.0 / 17.0,
    1.0 / 15.0,
    1.0 / 13.0,
    1.0 / 11.0,
    1.0 / 9.0,
    1.0 / 7.0,
    1.0 / 5.0,
    1.0 / 3.0,
];

/// `ln(1 + y)` for `y` in `[0, 1]` (where the fast kernels use it: `log1p(exp(-|x|))`), as
/// `2 atanh(y / (2 + y))`; relative error a few ulps.
#[inline(always)]
pub fn log1p_unit(y: f64) -> f64 {
    log1p_terms::<18>(y)
}

/// [`log1p_unit`] from 10 terms of the series: relative error below 1.5e-12 (the remainder
/// `z^11 / 23` at `z = 1/9`). For float32 results made of positive terms, as [`exp_short`].
#[inline(always)]
pub fn log1p_unit_short(y: f64) -> f64 {
    log1p_terms::<10>(y)
}

#[inline(always)]
fn log1p_terms<const N: usize>(y: f64) -> f64 {
    let s = y / (2.0 + y);
    let z = s * s; // <= 1/9
    let t = horner(&ATANH_C[18 - N..], z) * z; // the series after its leading 1
    2.0 * s + 2.0 * s * t
}

/// `ln x` for a positive normal `x` (anything else gives garbage: callers check), as
/// `e ln 2 + 2 atanh((m - 1) / (m + 1))` with `x = 2^e m`, `m` in `[sqrt(1/2), sqrt(2))`;
/// relative error a few ulps.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    // The biased exponent as a float, via the 2^52 trick (no 64-bit int-to-float in AVX2).
    let ef = f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - (4503599627370496.0 + 1023.0);
    let m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { ef + 1.0 } else { ef };
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s; // <= 0.0295
    let mut p = 1.0 / 25.0;
    p = p * z + 1.0 / 23.0;
    p = p * z + 1.0 / 21.0;
    p = p * z + 1.0 / 19.0;
    p = p * z + 1.0 / 17.0;
    p = p * z + 1.0 / 15.0;
    p = p * z + 1.0 / 13.0;
    p = p * z + 1.0 / 11.0;
    p = p * z + 1.0 / 9.0;
    p = p * z + 1.0 / 7.0;
    p = p * z + 1.0 / 5.0;
    p = p * z + 1.0 / 3.0;
    let lm = 2.0 * s + 2.0 * s * (p * z);
    e * LN2_HI + (e * LN2_LO + lm)
}

#[allow(dead_code)]
/// `log(1 + e^x)`, stable in both tails: `max(x, 0) + log1p(e^-|x|)`.
#[inline(always)]
pub fn softplus(x: f64) -> f64 {
    let pos = if x > 0.0 { x } else { 0.0 };
    pos + log1p_unit(exp(-x.abs()))
}

/// `1 / (1 + e^-x)` without overflow.
#[inline(always)]
pub fn sigmoid(x: f64) -> f64 {
    let e = exp(-x.abs());
    let big = 1.0 / (1.0 + e);
    if x >= 0.0 {
        big
    } else {
        e * big
    }
}

/// Explicit AVX2+FMA versions of [`exp`] (same algorithm and constants, so the same accuracy),
/// for the loops the compiler does not vectorise on its own.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{LN2_HI, LN2_LO, LOG2E, MAGIC};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pow2i(k: __m256d) -> __m256d {
        let b = _mm256_castpd_si256(_mm256_add_pd(k, _mm256_set1_pd(MAGIC + 1023.0)));
        _mm256_castsi256_pd(_mm256_slli_epi64(b, 52))
    }

    /// `e^x` on four lanes from the first `N` terms of the series after the reduction by
    /// `ln 2` (`N` = 14: relative error below 1e-16; `N` = 10: below 1e-11, the remainder
    /// `r^10 / 10!` at `|r| = ln(2) / 2` being 6.9e-12, times at most `e^(ln(2) / 2)`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_terms<const N: usize>(x: __m256d) -> __m256d {
        // max/min answer their second operand when either is NaN: `x` goes second.
        let x = _mm256_max_pd(_mm256_set1_pd(-746.0), x);
        let x = _mm256_min_pd(_mm256_set1_pd(710.0), x);
        let magic = _mm256_set1_pd(MAGIC);
        let k = _mm256_sub_pd(_mm256_fmadd_pd(x, _mm256_set1_pd(LOG2E), magic), magic);
        let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_HI), x);
        let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_LO), r);
        let c = &super::EXP_C[14 - N..];
        let mut p = _mm256_set1_pd(c[0]);
        for &c in &c[1..] {
            p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
        }
        let k1 = _mm256_sub_pd(_mm256_fmadd_pd(k, _mm256_set1_pd(0.5), magic), magic);
        let k2 = _mm256_sub_pd(k, k1);
        _mm256_mul_pd(_mm256_mul_pd(p, pow2i(k1)), pow2i(k2))
    }

    /// `(sum of exp(x - m) over x != m, count of x == m)` over a slice, with [`exp_terms`]`::<N>`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sum_split<const N: usize>(x: &[f64], m: f64) -> (f64, f64) {
        let mv = _mm256_set1_pd(m);
        let one = _mm256_set1_pd(1.0);
        let (mut r0, mut r1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let (mut c0, mut c1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for ch in chunks {
            let a = _mm256_loadu_pd(ch.as_ptr());
            let b = _mm256_loadu_pd(ch.as_ptr().add(4));
            let ea = exp_terms::<N>(_mm256_sub_pd(a, mv));
            let eb = exp_terms::<N>(_mm256_sub_pd(b, mv));
            let ta = _mm256_and_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(a, mv), one);
            let tb = _mm256_and_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(b, mv), one);
            r0 = _mm256_add_pd(r0, _mm256_sub_pd(ea, ta));
            r1 = _mm256_add_pd(r1, _mm256_sub_pd(eb, tb));
            c0 = _mm256_add_pd(c0, ta);
            c1 = _mm256_add_pd(c1, tb);
        }
        let mut rs = [0.0; 4];
        let mut cs = [0.0; 4];
        _mm256_storeu_pd(rs.as_mut_ptr(), _mm256_add_pd(r0, r1));
        _mm256_storeu_pd(cs.as_mut_ptr(), _mm256_add_pd(c0, c1));
        let mut rest = (rs[0] + rs[2]) + (rs[1] + rs[3]);
        let mut cnt = (cs[0] + cs[2]) + (cs[1] + cs[3]);
        for &v in tail {
            if v == m {
                cnt += 1.0;
            } else {
                rest += super::exp(v - m);
            }
        }
        (rest, cnt)
    }

    /// `out = exp(x - m) * a + b`, with [`exp_terms`]`::<N>`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_affine<const N: usize>(x: &[f64], out: &mut [f64], m: f64, a: f64, b: f64) {
        let n = x.len().min(out.len());
        let (mv, av, bv) = (_mm256_set1_pd(m), _mm256_set1_pd(a), _mm256_set1_pd(b));
        let full = n / 4 * 4;
        let mut i = 0;
        while i < full {
            let v = _mm256_loadu_pd(x.as_ptr().add(i));
            let e = exp_terms::<N>(_mm256_sub_pd(v, mv));
            _mm256_storeu_pd(out.as_mut_ptr().add(i), _mm256_fmadd_pd(e, av, bv));
            i += 4;
        }
        for j in full..n {
            out[j] = super::exp(x[j] - m) * a + b;
        }
    }
}

/// Sum of `f(i)` for `i` in `0..n` with eight independent accumulators (vectorisable), combined
/// pairwise. Error at most about `n/8` ulps of the sum of magnitudes.
#[inline(always)]
#[allow(dead_code)]
pub fn lanes_sum(n: usize, mut f: impl FnMut(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = n / 8 * 8;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += 8;
    }
    let mut tail = 0.0;
    for j in full..n {
        tail += f(j);
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// Runs `$body` (an expression) compiled for AVX2+FMA when the CPU has them, for the baseline
/// target otherwise. The body must only call `#[inline(always)]` code to benefit.
macro_rules! simd {
    ($ret:ty, |$($arg:ident : $ty:ty),*| $body:expr) => {{
        #[inline(always)]
        fn body($($arg: $ty),*) -> $ret {
            $body
        }
        let result: $ret;
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx($($arg: $ty),*) -> $ret {
                body($($arg),*)
            }
            result = if $crate::reference::fast::math::has_avx2() {
                // SAFETY: the CPU supports the features `avx` was compiled for.
                unsafe { avx($($arg),*) }
            } else {
                body($($arg),*)
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            result = body($($arg),*);
        }
        result
    }};
}
pub(crate) use simd;

/// Whether the CPU has AVX2 and FMA (cached by std).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        if a == b {
            0.0
        } else {
            ((a - b) / b).abs()
        }
    }

    #[test]
    fn exp_is_accurate_over_the_whole_range() {
        let mut worst: f64 = 0.0;
        let mut x = -708.0;
        while x < 709.0 {
            worst = worst.max(rel(exp(x), x.exp()));
            x += 0.0137;
        }
        for x in [-1e-300, 0.0, 1e-10, -0.34657359, 0.34657359, 1.0, -1.0] {
            worst = worst.max(rel(exp(x), x.exp()));
        }
        assert!(worst < 1e-15, "worst relative error {worst}");
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
        // Subnormal results keep their magnitude.
        assert!(rel(exp(-740.0), (-740.0f64).exp()) < 1e-10);
    }

    /// The 10-term versions used for float32 results stay within their stated bounds.
    #[test]
    fn short_exp_and_log1p_are_within_their_bounds() {
        let (mut we, mut wl) = (0.0f64, 0.0f64);
        let mut x = -700.0;
        while x < 700.0 {
            we = we.max(rel(exp_short(x), x.exp()));
            x += 0.00713;
        }
        let mut y = 0.0;
        while y <= 1.0 {
            if y > 0.0 {
                wl = wl.max(rel(log1p_unit_short(y), y.ln_1p()));
            }
            y += 1.0 / 4096.0;
        }
        for y in [1e-300, 1e-20, 1e-8, 0.5, 1.0] {
            wl = wl.max(rel(log1p_unit_short(y), y.ln_1p()));
        }
        assert!(we < 1e-11, "exp_short: worst relative error {we}");
        assert!(wl < 1.5e-12, "log1p_unit_short: worst relative error {wl}");
        // And they are the short series: the full ones are 4 orders of magnitude better.
        assert!(we > 1e-14 && wl > 1e-15, "{we} {wl}");
    }

    #[test]
    fn ln_is_accurate() {
        let mut worst: f64 = 0.0;
        let mut x = f64::MIN_POSITIVE;
        while x < 1e300 {
            // Just below and above sqrt(2), where the reduction switches: not SQRT_2 itself.
            #[allow(clippy::approx_constant)]
            let factors = [1.0, 1.1, 1.4142135, 1.4142136, 1.7, 1.999999];
            for f in factors {
                let y = x * f;
                let want = y.ln();
                let err = (ln(y) - want).abs() / want.abs().max(1e-300);
                worst = worst.max(if want == 0.0 { ln(y).abs() } else { err });
            }
            x *= 3.3;
        }
        for y in [
            1.0f64,
            1.0 + 1e-15,
            1.0 - 1e-16,
            0.5,
            2.0,
            1e-30,
            0.999,
            1.001,
        ] {
            let want: f64 = y.ln();
            let err = if want == 0.0 {
                ln(y).abs()
            } else {
                ((ln(y) - want) / want).abs()
            };
            worst = worst.max(err);
        }
        assert!(worst < 1e-15, "ln worst {worst}");
    }

    #[test]
    fn log1p_softplus_sigmoid_are_accurate() {
        let mut worst: f64 = 0.0;
        let mut y = 0.0;
        while y <= 1.0 {
            worst = worst.max(rel(log1p_unit(y), y.ln_1p()));
            y += 1.0 / 4096.0 + 1e-9;
        }
        for y in [1e-300, 1e-20, 1e-8, 1.0] {
            worst = worst.max(rel(log1p_unit(y), y.ln_1p()));
        }
        assert!(worst < 4e-16, "log1p worst {worst}");
        for x in [-800.0, -30.0, -1.0, 0.0, 1e-9, 2.5, 40.0, 800.0] {
            let want = crate::reference::numeric::softplus(x);
            assert!(rel(softplus(x), want) < 1e-15, "softplus({x})");
            let s = 1.0 / (1.0 + (-x).exp());
            assert!(rel(sigmoid(x), s) < 1e-15, "sigmoid({x})");
        }
        assert_eq!(sigmoid(f64::INFINITY), 1.0);
        assert_eq!(sigmoid(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn the_avx2_exp_equals_the_scalar_one() {
        if !has_avx2() {
            return;
        }
        let xs: Vec<f64> = (0..4001).map(|i| (i as f64 - 2000.0) * 0.3771).collect();
        let m = 1.25;
        let want: f64 = xs.iter().filter(|&&v| v != m).map(|&v| (v - m).exp()).sum();
        let cnt_want = xs.iter().filter(|&&v| v == m).count() as f64;
        let (rest, cnt) = unsafe { avx2::exp_sum_split::<14>(&xs, m) };
        assert!(rel(rest, want) < 1e-14, "{rest} vs {want}");
        assert_eq!(cnt, cnt_want);
        // The 10-term series (float32 logits): within its 1e-11 bound.
        let (rest, cnt) = unsafe { avx2::exp_sum_split::<10>(&xs, m) };
        assert!(rel(rest, want) < 1e-11, "{rest} vs {want}");
        assert_eq!(cnt, cnt_want);
        for (n, tol) in [(14, 1e-15), (10, 1e-11)] {
            let mut out = vec![0.0; xs.len()];
            unsafe {
                if n == 14 {
                    avx2::exp_affine::<14>(&xs, &mut out, m, 0.5, -0.25)
                } else {
                    avx2::exp_affine::<10>(&xs, &mut out, m, 0.5, -0.25)
                }
            };
            for (x, o) in xs.iter().zip(&out) {
                let w = (x - m).exp() * 0.5 - 0.25;
                assert!(
                    o == &w || (o - w).abs() <= tol * w.abs().max(1.0),
                    "{n} terms, {x}: {o} vs {w}"
                );
            }
        }
        // Reduced arguments over [-ln2/2, ln2/2], 10 terms: relative error below 1e-11.
        let rs: Vec<f64> = (0..=1000)
            .map(|i| (i as f64 / 500.0 - 1.0) * 0.3466)
            .collect();
        let mut out = vec![0.0; rs.len()];
        unsafe { avx2::exp_affine::<10>(&rs, &mut out, 0.0, 1.0, 0.0) };
        for (r, o) in rs.iter().zip(&out) {
            assert!(rel(*o, r.exp()) < 1e-11, "exp({r}): {o}");
        }
    }

    #[test]
    fn dispatch_gives_the_same_answer_as_the_scalar_code() {
        let xs: Vec<f64> = (0..1000).map(|i| (i as f64 - 500.0) * 0.37).collect();
        let xs = &xs[..];
        let s = simd!(f64, |xs: &[f64]| lanes_sum(xs.len(), |i| exp(xs[i] * 0.01)));
        let want: f64 = xs.iter().map(|x| (x * 0.01).exp()).sum();
        assert!(rel(s, want) < 1e-13);
    }
}
