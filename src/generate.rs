//! Specs -> cases: expands each case template of a spec into concrete calls.
//!
//! Deterministic and portable: random draws come from ChaCha8 seeded by `family/case/repeat`,
//! and only use integer arithmetic and correctly rounded IEEE operations (no `exp`, `ln`, `cos`,
//! whose last bit may differ between platforms' math libraries), so every machine writes
//! byte-identical case files.

use crate::backend::Value;
use crate::case::{call_digest, fnv1a64, Case, CaseFile, CASES_FORMAT};
use crate::spec::{
    ApiSpec, ArgTemplate, Bound, CaseTemplate, DimRef, DimSpec, Ordered, PlainValue, RandomKind,
    Recipe, Spec, SpecError,
};
use crate::tensor::{parse_special_float, DType, Tensor};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

const DEFAULT_DTYPES: [DType; 2] = [DType::Float32, DType::Float64];

/// A drawn tensor before the case dtype is applied.
#[derive(Clone, Debug)]
struct Drawn {
    shape: Vec<usize>,
    values: Vec<f64>,
    /// Integer-valued recipe (randint): int64 unless the recipe names a dtype.
    integer: bool,
    dtype: Option<DType>,
}

impl Drawn {
    fn dtype_for(&self, case_dtype: DType) -> DType {
        self.dtype.unwrap_or(if self.integer {
            DType::Int64
        } else {
            case_dtype
        })
    }

    fn takes_case_dtype(&self) -> bool {
        self.dtype.is_none() && !self.integer
    }
}

/// Errors inside one case template, before the file is attached.
type Fallible<T> = Result<T, String>;

/// Uniform in [0, 1) from the top 53 bits.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Approximately standard normal: Irwin-Hall sum of 12 uniforms, exact IEEE arithmetic only.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    (0..12).map(|_| unit(rng)).sum::<f64>() - 6.0
}

struct Ctx<'a> {
    dims: &'a HashMap<String, u64>,
}

impl Ctx<'_> {
    fn dim(&self, name: &str) -> Fallible<u64> {
        self.dims
            .get(name)
            .copied()
            .ok_or_else(|| format!("unknown dim '{name}' (declare it under `dims`)"))
    }

    fn shape(&self, shape: &[DimRef]) -> Fallible<Vec<usize>> {
        shape
            .iter()
            .map(|d| match d {
                DimRef::Size(n) => Ok(*n as usize),
                DimRef::Dim(name) => self.dim(name).map(|n| n as usize),
            })
            .collect()
    }

    fn bound(&self, b: &Option<Bound>, field: &str) -> Fallible<f64> {
        match b {
            Some(Bound::Num(x)) => Ok(*x),
            Some(Bound::Dim(name)) => self.dim(name).map(|n| n as f64),
            None => Err(format!("`{field}` is required for this random kind")),
        }
    }
}

fn scalar_element(v: &serde_yaml::Value) -> Fallible<f64> {
    match v {
        serde_yaml::Value::Number(n) => n.as_f64().ok_or_else(|| format!("bad number {n}")),
        serde_yaml::Value::Bool(b) => Ok(*b as u8 as f64),
        serde_yaml::Value::String(s) => parse_special_float(s)
            .ok_or_else(|| format!("'{s}' is not a number (use nan, inf, -inf)")),
        other => Err(format!("a tensor element must be a number, got {other:?}")),
    }
}

/// Flattens nested lists, checking they are rectangular; returns (shape, values).
fn flatten(v: &serde_yaml::Value) -> Fallible<(Vec<usize>, Vec<f64>)> {
    match v {
        serde_yaml::Value::Sequence(items) => {
            let mut shape: Option<Vec<usize>> = None;
            let mut values = Vec::new();
            for item in items {
                let (s, mut vals) = flatten(item)?;
                match &shape {
                    None => shape = Some(s),
                    Some(prev) if *prev != s => {
                        return Err(format!("ragged data: rows of shape {prev:?} and {s:?}"))
                    }
                    Some(_) => {}
                }
                values.append(&mut vals);
            }
            let mut full = vec![items.len()];
            full.extend(shape.unwrap_or_default());
            Ok((full, values))
        }
        scalar => Ok((vec![], vec![scalar_element(scalar)?])),
    }
}

fn check_shape_len(shape: &[usize], n: usize) -> Fallible<()> {
    let numel: usize = shape.iter().product();
    if numel != n {
        return Err(format!(
            "shape {shape:?} holds {numel} elements, data has {n}"
        ));
    }
    Ok(())
}

fn normalize_axis(axis: i64, rank: usize) -> Fallible<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if rank == 0 || a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Applies `f` to every 1-D lane along `axis` of a row-major buffer.
fn for_each_lane(shape: &[usize], axis: usize, values: &mut [f64], mut f: impl FnMut(&mut [f64])) {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut lane = vec![0.0; n];
    for o in 0..outer {
        for i in 0..inner {
            for (k, slot) in lane.iter_mut().enumerate() {
                *slot = values[(o * n + k) * inner + i];
            }
            f(&mut lane);
            for (k, x) in lane.iter().enumerate() {
                values[(o * n + k) * inner + i] = *x;
            }
        }
    }
}

fn draw(recipe: &Recipe, ctx: &Ctx, rng: &mut ChaCha8Rng) -> Fallible<Drawn> {
    let given = [
        recipe.data.is_some(),
        recipe.fill.is_some(),
        recipe.random.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err("a tensor recipe needs exactly one of `data`, `fill`, `random`".into());
    }
    let dtype = recipe.dtype;
    if let Some(data) = &recipe.data {
        let (natural, values) = flatten(data)?;
        let shape = match &recipe.shape {
            Some(s) => {
                let s = ctx.shape(s)?;
                check_shape_len(&s, values.len())?;
                s
            }
            None => natural,
        };
        return Ok(Drawn {
            shape,
            values,
            integer: false,
            dtype,
        });
    }
    let shape = ctx.shape(recipe.shape.as_deref().ok_or("`shape` is required")?)?;
    let n: usize = shape.iter().product();
    if let Some(fill) = &recipe.fill {
        let x = scalar_element(fill)?;
        return Ok(Drawn {
            shape,
            values: vec![x; n],
            integer: false,
            dtype,
        });
    }
    let kind = recipe.random.expect("checked above");
    let mut integer = false;
    let values: Vec<f64> = match kind {
        RandomKind::Uniform => {
            let (lo, hi) = (
                ctx.bound(&recipe.low, "low")?,
                ctx.bound(&recipe.high, "high")?,
            );
            (0..n).map(|_| lo + (hi - lo) * unit(rng)).collect()
        }
        RandomKind::Normal => {
            let (m, s) = (recipe.mean.unwrap_or(0.0), recipe.std.unwrap_or(1.0));
            (0..n).map(|_| m + s * normal(rng)).collect()
        }
        RandomKind::Randint => {
            integer = true;
            let (lo, hi) = (
                ctx.bound(&recipe.low, "low")?,
                ctx.bound(&recipe.high, "high")?,
            );
            if hi <= lo || hi.is_nan() || lo.is_nan() || lo.fract() != 0.0 || hi.fract() != 0.0 {
                return Err(format!(
                    "randint needs integers low < high, got [{lo}, {hi})"
                ));
            }
            let span = (hi - lo) as u64;
            (0..n)
                .map(|_| lo + (rng.next_u64() % span) as f64)
                .collect()
        }
        RandomKind::Bernoulli => {
            let p = recipe.p.unwrap_or(0.5);
            (0..n)
                .map(|_| if unit(rng) < p { 1.0 } else { 0.0 })
                .collect()
        }
        RandomKind::Probs | RandomKind::Onehot => {
            let axis = normalize_axis(recipe.axis.unwrap_or(-1), shape.len())?;
            let mut values: Vec<f64> = (0..n).map(|_| 0.05 + 0.95 * unit(rng)).collect();
            let onehot = kind == RandomKind::Onehot;
            for_each_lane(&shape, axis, &mut values, |lane| {
                if onehot {
                    let hot = (rng.next_u64() % lane.len() as u64) as usize;
                    for (k, x) in lane.iter_mut().enumerate() {
                        *x = if k == hot { 1.0 } else { 0.0 };
                    }
                } else {
                    let total: f64 = lane.iter().sum();
                    lane.iter_mut().for_each(|x| *x /= total);
                }
            });
            values
        }
    };
    Ok(Drawn {
        shape,
        values,
        integer,
        dtype,
    })
}

/// The argument templates of one call, after `calls` overrides, in order.
fn merged_args<'a>(t: &'a CaseTemplate, short: &str) -> Vec<(&'a str, &'a ArgTemplate)> {
    let mut out: Vec<(&str, &ArgTemplate)> = t.args.iter().collect();
    if let Some(over) = t.calls.get(short) {
        for (k, v) in over.iter() {
            match out.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
        }
    }
    out
}

/// Everything drawn for one repeat, keyed by the template's address.
struct Draws {
    named: HashMap<String, Drawn>,
    inline: HashMap<*const ArgTemplate, Drawn>,
}

impl Draws {
    fn take(t: &CaseTemplate, ctx: &Ctx, rng: &mut ChaCha8Rng) -> Fallible<Draws> {
        let mut named = HashMap::new();
        for (name, tmpl) in t.tensors.iter() {
            let ArgTemplate::Recipe(r) = tmpl else {
                return Err(format!("tensors.{name}: must be a tensor recipe"));
            };
            named.insert(
                name.to_string(),
                draw(r, ctx, rng).map_err(|e| format!("tensors.{name}: {e}"))?,
            );
        }
        let mut inline = HashMap::new();
        let mut visit = |path: String, tmpl: &ArgTemplate| -> Fallible<()> {
            if let ArgTemplate::Recipe(r) = tmpl {
                inline.insert(
                    tmpl as *const _,
                    draw(r, ctx, rng).map_err(|e| format!("{path}: {e}"))?,
                );
            }
            Ok(())
        };
        for (k, v) in t.args.iter() {
            visit(format!("args.{k}"), v)?;
        }
        for (api, over) in t.calls.iter() {
            for (k, v) in over.iter() {
                visit(format!("calls.{api}.{k}"), v)?;
            }
        }
        for (k, list) in t.vary.iter() {
            for (i, v) in list.iter().enumerate() {
                visit(format!("vary.{k}[{i}]"), v)?;
            }
        }
        Ok(Draws { named, inline })
    }

    fn get(&self, tmpl: &ArgTemplate) -> Fallible<Option<&Drawn>> {
        match tmpl {
            ArgTemplate::Ref(name) => self
                .named
                .get(name)
                .map(Some)
                .ok_or_else(|| format!("${name} is not defined under `tensors`")),
            ArgTemplate::Recipe(_) => Ok(self.inline.get(&(tmpl as *const _))),
            ArgTemplate::Plain(_) => Ok(None),
        }
    }

    fn value(&self, tmpl: &ArgTemplate, dtype: DType) -> Fallible<Value> {
        if let Some(d) = self.get(tmpl)? {
            let dt = d.dtype_for(dtype);
            let t = Tensor::from_f64(dt, d.shape.clone(), d.values.clone())
                .map_err(|e| e.to_string())?;
            return Ok(Value::Tensor(t));
        }
        let ArgTemplate::Plain(p) = tmpl else {
            unreachable!("refs and recipes are drawn")
        };
        Ok(match p {
            PlainValue::Null => Value::Null,
            PlainValue::Bool(b) => Value::Bool(*b),
            PlainValue::Int(i) => Value::Int(*i),
            PlainValue::Float(x) => Value::Float(*x),
            PlainValue::Str(s) => Value::Str(s.clone()),
            PlainValue::Ints(v) => Value::IntList(v.clone()),
        })
    }

    fn takes_case_dtype(&self, tmpl: &ArgTemplate) -> bool {
        matches!(self.get(tmpl), Ok(Some(d)) if d.takes_case_dtype())
    }
}

/// The name segment of a vary value.
fn segment(key: &str, tmpl: &ArgTemplate, index: usize) -> String {
    match tmpl {
        ArgTemplate::Plain(PlainValue::Str(s)) => s.clone(),
        ArgTemplate::Plain(PlainValue::Null) => format!("{key}=null"),
        ArgTemplate::Plain(PlainValue::Bool(b)) => format!("{key}={b}"),
        ArgTemplate::Plain(PlainValue::Int(i)) => format!("{key}={i}"),
        ArgTemplate::Plain(PlainValue::Float(x)) => {
            format!("{key}={}", crate::tensor::format_float(*x))
        }
        ArgTemplate::Plain(PlainValue::Ints(v)) => {
            format!(
                "{key}={}",
                v.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        ArgTemplate::Ref(name) => format!("{key}={name}"),
        ArgTemplate::Recipe(_) => format!("{key}={index}"),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-=,".contains(c))
}

/// Checks every argument a call would pass is one the API declares.
fn check_declared(api: &ApiSpec, short: &str, names: impl Iterator<Item = String>) -> Fallible<()> {
    for n in names {
        if api.args.get(&n).is_none() {
            let declared: Vec<&str> = api.args.keys().collect();
            return Err(format!(
                "argument '{n}' is not declared for `apis.{short}` ({}); declared: {}",
                api.api,
                declared.join(", ")
            ));
        }
    }
    Ok(())
}

fn expand_template(
    family: &str,
    t: &CaseTemplate,
    spec: &Spec,
    out: &mut Vec<Case>,
) -> Fallible<()> {
    if !valid_name(&t.name) {
        return Err("`name` must be non-empty and use only [A-Za-z0-9_.-]".into());
    }
    if t.apis.is_empty() {
        return Err("`apis` is empty".into());
    }
    for short in &t.apis {
        if spec.apis.get(short).is_none() {
            let known: Vec<&str> = spec.apis.keys().collect();
            return Err(format!(
                "apis: '{short}' is not in `apis` (known: {})",
                known.join(", ")
            ));
        }
    }
    for (short, _) in t.calls.iter() {
        if !t.apis.iter().any(|a| a == short) {
            return Err(format!(
                "calls.{short}: '{short}' is not one of this case's `apis`"
            ));
        }
    }
    let repeat = t.repeat.unwrap_or(1);
    if repeat == 0 {
        return Err("`repeat` must be at least 1".into());
    }
    let dtypes: Vec<DType> = t.dtypes.clone().unwrap_or(DEFAULT_DTYPES.to_vec());
    if let Some(d) = dtypes.iter().find(|d| !d.is_float()) {
        return Err(format!(
            "dtypes: {d} is not a float dtype (give integer tensors their own `dtype`)"
        ));
    }
    for r in 0..repeat {
        let mut rng =
            ChaCha8Rng::seed_from_u64(fnv1a64(format!("{family}/{}/{r}", t.name).as_bytes()));
        let mut dims = HashMap::new();
        for (name, d) in t.dims.iter() {
            let v = match d {
                DimSpec::Fixed(n) => *n,
                DimSpec::Range([lo, hi]) if lo <= hi => lo + rng.next_u64() % (hi - lo + 1),
                DimSpec::Range([lo, hi]) => {
                    return Err(format!("dims.{name}: empty range [{lo}, {hi}]"))
                }
            };
            dims.insert(name.to_string(), v);
        }
        let draws = Draws::take(t, &Ctx { dims: &dims }, &mut rng)?;
        for short in &t.apis {
            let api = spec.apis.get(short).expect("checked above");
            let base = merged_args(t, short);
            check_declared(
                api,
                short,
                base.iter()
                    .map(|(k, _)| k.to_string())
                    .chain(t.vary.keys().map(str::to_string)),
            )?;
            // Cartesian product over `vary`, in declaration order.
            let mut combos: Vec<Vec<(usize, &ArgTemplate)>> = vec![vec![]];
            for (_, list) in t.vary.iter() {
                if list.is_empty() {
                    return Err("vary: an empty list would drop the whole case".into());
                }
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        list.iter().enumerate().map(move |(i, v)| {
                            let mut c = c.clone();
                            c.push((i, v));
                            c
                        })
                    })
                    .collect();
            }
            for combo in combos {
                let mut chosen: Vec<(&str, &ArgTemplate)> = base.clone();
                let mut segs = vec![family.to_string(), short.clone(), t.name.clone()];
                if repeat > 1 {
                    segs.push(format!("r{r}"));
                }
                for ((key, _), (i, v)) in t.vary.iter().zip(&combo) {
                    segs.push(segment(key, v, *i));
                    match chosen.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = v,
                        None => chosen.push((key, v)),
                    }
                }
                let uses_dtype = chosen.iter().any(|(_, v)| draws.takes_case_dtype(v));
                let case_dtypes: &[DType] = if uses_dtype { &dtypes } else { &dtypes[..1] };
                for &dt in case_dtypes {
                    let mut args = BTreeMap::new();
                    for (k, v) in &chosen {
                        args.insert(
                            k.to_string(),
                            draws.value(v, dt).map_err(|e| format!("args.{k}: {e}"))?,
                        );
                    }
                    let mut name = segs.join("/");
                    if uses_dtype {
                        name.push('/');
                        name.push_str(dt.name());
                    }
                    let wrt = api
                        .differentiable
                        .iter()
                        .filter(|n| {
                            matches!(args.get(n.as_str()), Some(Value::Tensor(t)) if t.dtype().is_float())
                        })
                        .cloned()
                        .collect();
                    out.push(Case {
                        digest: call_digest(&api.api, &args),
                        wrt,
                        name,
                        api: api.api.clone(),
                        source: t.source.clone(),
                        compare: t.compare.clone(),
                        tolerance: t.tolerance.clone(),
                        args,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Concrete values of argument templates outside any case (no dims, fixed seed), e.g. for the
/// plots in the docs. Tensors without a dtype take `dtype`.
pub fn literal_args(
    args: &Ordered<ArgTemplate>,
    dtype: DType,
) -> Result<BTreeMap<String, Value>, String> {
    let t = CaseTemplate {
        name: "literal".into(),
        apis: vec![],
        source: None,
        compare: None,
        tolerance: None,
        dtypes: None,
        repeat: None,
        dims: Ordered::default(),
        tensors: Ordered::default(),
        args: args.clone(),
        calls: Ordered::default(),
        vary: Ordered::default(),
    };
    let dims = HashMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let draws = Draws::take(&t, &Ctx { dims: &dims }, &mut rng)?;
    t.args
        .iter()
        .map(|(k, v)| {
            Ok((
                k.to_string(),
                draws.value(v, dtype).map_err(|e| format!("{k}: {e}"))?,
            ))
        })
        .collect()
}

/// Expands one parsed spec into its case file.
pub fn generate(file: &Path, spec: &Spec, text: &str) -> Result<CaseFile, SpecError> {
    let err = |message: String| SpecError {
        file: file.to_path_buf(),
        message,
    };
    for (short, api) in spec.apis.iter() {
        if !valid_name(short) {
            return Err(err(format!(
                "apis.{short}: short names use only [A-Za-z0-9_.-]"
            )));
        }
        if crate::spec::framework_of(&api.api) == "unknown" {
            return Err(err(format!(
                "apis.{short}.api: '{}' is not a torch.*, tf.* or tf.keras.* name",
                api.api
            )));
        }
    }
    let mut cases = Vec::new();
    for (i, t) in spec.cases.iter().enumerate() {
        expand_template(&spec.family, t, spec, &mut cases)
            .map_err(|e| err(format!("cases[{i}] ({}): {e}", t.name)))?;
    }
    let mut seen = HashSet::new();
    for c in &cases {
        if !seen.insert(c.name.as_str()) {
            return Err(err(format!(
                "two cases expand to the trial name '{}'; rename one",
                c.name
            )));
        }
    }
    if cases.is_empty() {
        return Err(err("the spec has no cases".into()));
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(CaseFile {
        format: CASES_FORMAT.into(),
        family: spec.family.clone(),
        spec_digest: format!("{:016x}", fnv1a64(text.as_bytes())),
        cases,
    })
}

/// Loads and expands every spec of a directory. Every spec is tried: the ones that load are
/// returned beside the errors of the ones that do not.
pub fn generate_dir(specs_dir: &Path) -> (Vec<CaseFile>, Vec<SpecError>) {
    generate_dir_only(specs_dir, None)
}

/// As [`generate_dir`], restricted to one family when `only` names it.
pub fn generate_dir_only(specs_dir: &Path, only: Option<&str>) -> (Vec<CaseFile>, Vec<SpecError>) {
    let mut files = match crate::spec::files(specs_dir) {
        Ok(f) => f,
        Err(e) => return (vec![], vec![e]),
    };
    if let Some(family) = only {
        files.retain(|f| f.file_stem().is_some_and(|s| s == family));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match crate::spec::load(&f).and_then(|(spec, text)| generate(&f, &spec, &text)) {
            Ok(c) => out.push(c),
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
family: demo
title: Demo
summary: s
formula: {text: t, latex: l}
apis:
  torch: {api: torch.nn.functional.l1_loss, args: {input: {type: tensor}, target: {type: tensor}, reduction: {type: str, default: mean}}}
cases:
  - name: rnd
    apis: [torch]
    repeat: 3
    dims: {N: [1, 4], C: 3}
    tensors: {x: {random: uniform, low: -1, high: 1, shape: [N, C]}}
    args:
      input: $x
      target: {random: probs, shape: [N, C]}
    vary: {reduction: [none, mean]}
"#;

    fn gen(text: &str) -> Result<CaseFile, SpecError> {
        let p = Path::new("specs/demo.yaml");
        generate(p, &crate::spec::parse(p, text)?, text)
    }

    #[test]
    fn expansion_is_deterministic_and_named_by_segments() {
        let a = gen(SPEC).unwrap();
        let b = gen(SPEC).unwrap();
        assert_eq!(a.to_text(), b.to_text());
        assert_eq!(a.cases.len(), 3 * 2 * 2);
        assert!(a
            .cases
            .iter()
            .any(|c| c.name == "demo/torch/rnd/r2/mean/float64"));
    }

    #[test]
    fn dtype_variants_share_values_and_probs_sum_to_one() {
        let f = gen(SPEC).unwrap();
        let get = |n: &str| f.cases.iter().find(|c| c.name == n).unwrap().clone();
        let (a, b) = (
            get("demo/torch/rnd/r0/none/float32"),
            get("demo/torch/rnd/r0/none/float64"),
        );
        let (Value::Tensor(x32), Value::Tensor(x64)) = (&a.args["input"], &b.args["input"]) else {
            panic!()
        };
        for (p, q) in x32.to_f64_vec().iter().zip(x64.to_f64_vec()) {
            assert_eq!(*p, q as f32 as f64);
        }
        let Value::Tensor(t) = &b.args["target"] else {
            panic!()
        };
        let c = t.shape()[1];
        for row in t.to_f64_vec().chunks(c) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn undeclared_argument_is_named() {
        let bad = SPEC.replace("target: {random", "tgt: {random");
        let e = gen(&bad).unwrap_err().to_string();
        assert!(e.contains("cases[0] (rnd)") && e.contains("'tgt'"), "{e}");
    }

    #[test]
    fn unknown_reference_is_named() {
        let bad = SPEC.replace("input: $x", "input: $y");
        let e = gen(&bad).unwrap_err().to_string();
        assert!(e.contains("$y"), "{e}");
    }
}
