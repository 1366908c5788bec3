//! The serde model of a spec file (`specs/<family>.yaml`, see `docs/spec-format.md`) and its
//! strict loading: unknown fields, wrong types and dangling references are errors that name the
//! file and the field path.

use crate::tensor::DType;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// A YAML mapping whose key order is kept (argument order, vary order, draw order).
#[derive(Clone, Debug, PartialEq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<T> Ordered<T> {
    pub fn get(&self, key: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("duplicate key '{k}'")));
                    }
                    let v = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub family: String,
    pub title: String,
    pub summary: String,
    pub formula: Formula,
    #[serde(default)]
    pub source: Option<String>,
    pub apis: Ordered<ApiSpec>,
    #[serde(default)]
    pub differences: Vec<Difference>,
    pub cases: Vec<CaseTemplate>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formula {
    pub text: String,
    pub latex: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// Fully qualified public name, e.g. `torch.nn.functional.mse_loss`.
    pub api: String,
    pub args: Ordered<ArgSpec>,
    #[serde(default)]
    pub shapes: Option<String>,
    #[serde(default)]
    pub dtypes: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// How docs plot this API's loss and derivative; no plot without it.
    #[serde(default)]
    pub plot: Option<PlotSpec>,
    /// The tensor arguments the framework differentiates (autograd / GradientTape). A case
    /// gets a backward trial with respect to those of them that are floating-point tensors.
    #[serde(default)]
    pub differentiable: Vec<String>,
}

/// A sweep for the docs: element `index` of tensor argument `arg` runs over `range`, the other
/// arguments are fixed literals; the plot shows the sum of the output and its derivative.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    pub arg: String,
    #[serde(default)]
    pub index: usize,
    pub range: [f64; 2],
    pub args: Ordered<ArgTemplate>,
    /// Axis label for the swept value, e.g. "input - target".
    #[serde(default)]
    pub label: Option<String>,
}

impl ApiSpec {
    /// `torch`, `tensorflow` (tf.nn and tf.keras both run under TensorFlow).
    pub fn framework(&self) -> &'static str {
        framework_of(&self.api)
    }
}

/// The framework that defines an API, from its fully qualified name.
pub fn framework_of(api: &str) -> &'static str {
    if api.starts_with("torch.") {
        "torch"
    } else if api.starts_with("tf.keras.") {
        "keras"
    } else if api.starts_with("tf.") {
        "tensorflow"
    } else {
        "unknown"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgType {
    Tensor,
    Str,
    Float,
    Int,
    Bool,
    Ints,
    Callable,
    Any,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgSpec {
    #[serde(rename = "type")]
    pub ty: ArgType,
    /// The API's default; absent means the argument is required.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<serde_yaml::Value>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub doc: Option<String>,
}

/// Keeps `default: null` (present, None in Python) apart from an absent default.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_yaml::Value>, D::Error> {
    serde_yaml::Value::deserialize(d).map(Some)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    pub title: String,
    pub why: String,
    #[serde(default)]
    pub compare: Option<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
    pub reason: String,
}

/// A dim of `dims`: fixed, or an inclusive range drawn per repeat.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum DimSpec {
    Fixed(u64),
    Range([u64; 2]),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseTemplate {
    pub name: String,
    pub apis: Vec<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub compare: Option<String>,
    #[serde(default)]
    pub tolerance: Option<Tolerance>,
    #[serde(default)]
    pub dtypes: Option<Vec<DType>>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub dims: Ordered<DimSpec>,
    #[serde(default)]
    pub tensors: Ordered<ArgTemplate>,
    #[serde(default)]
    pub args: Ordered<ArgTemplate>,
    #[serde(default)]
    pub calls: Ordered<Ordered<ArgTemplate>>,
    #[serde(default)]
    pub vary: Ordered<Vec<ArgTemplate>>,
}

/// An argument as written in a spec: a plain value, a `$name` reference, or a tensor recipe.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgTemplate {
    Plain(PlainValue),
    Ref(String),
    Recipe(Box<Recipe>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum PlainValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Ints(Vec<i64>),
}

impl<'de> Deserialize<'de> for ArgTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_yaml::Value as Y;
        let v = Y::deserialize(d)?;
        Ok(match v {
            Y::Mapping(_) => ArgTemplate::Recipe(Box::new(
                Recipe::deserialize(v)
                    .map_err(|e| D::Error::custom(format!("tensor recipe: {e}")))?,
            )),
            Y::Null => ArgTemplate::Plain(PlainValue::Null),
            Y::Bool(b) => ArgTemplate::Plain(PlainValue::Bool(b)),
            Y::Number(n) => match n.as_i64() {
                Some(i) => ArgTemplate::Plain(PlainValue::Int(i)),
                None => ArgTemplate::Plain(PlainValue::Float(n.as_f64().unwrap_or(f64::NAN))),
            },
            Y::String(s) => match s.strip_prefix('$') {
                Some(name) => ArgTemplate::Ref(name.to_string()),
                None => ArgTemplate::Plain(PlainValue::Str(s)),
            },
            Y::Sequence(items) => {
                let ints: Option<Vec<i64>> = items.iter().map(|x| x.as_i64()).collect();
                ArgTemplate::Plain(PlainValue::Ints(ints.ok_or_else(|| {
                    D::Error::custom(
                        "a list argument must hold integers (write tensors as {data: [...]})",
                    )
                })?))
            }
            Y::Tagged(_) => return Err(D::Error::custom("YAML tags are not supported")),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandomKind {
    Uniform,
    Normal,
    Randint,
    Probs,
    Onehot,
    Bernoulli,
}

/// A bound that is a number or the name of a dim.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Num(f64),
    Dim(String),
}

/// A shape entry: a size or the name of a dim.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DimRef {
    Size(u64),
    Dim(String),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub data: Option<serde_yaml::Value>,
    #[serde(default)]
    pub fill: Option<serde_yaml::Value>,
    #[serde(default)]
    pub random: Option<RandomKind>,
    #[serde(default)]
    pub low: Option<Bound>,
    #[serde(default)]
    pub high: Option<Bound>,
    #[serde(default)]
    pub mean: Option<f64>,
    #[serde(default)]
    pub std: Option<f64>,
    #[serde(default)]
    pub p: Option<f64>,
    #[serde(default)]
    pub axis: Option<i64>,
    #[serde(default)]
    pub shape: Option<Vec<DimRef>>,
    #[serde(default)]
    pub dtype: Option<DType>,
}

/// A spec that failed to load: the file and what is wrong, with the field path.
#[derive(Debug)]
pub struct SpecError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for SpecError {}

/// Parses a spec's text; errors name the field path (`cases[3].args.input.random`) and the
/// line and column.
pub fn parse(file: &Path, text: &str) -> Result<Spec, SpecError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // serde_yaml's message may already start with the path; it ends with the location.
        let inner = e.into_inner().to_string();
        let inner = inner
            .strip_prefix(&format!("{path}: "))
            .unwrap_or(&inner)
            .to_string();
        SpecError {
            file: file.to_path_buf(),
            message: if path == "." {
                inner
            } else {
                format!("field `{path}`: {inner}")
            },
        }
    })?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if spec.family != stem {
        return Err(SpecError {
            file: file.to_path_buf(),
            message: format!(
                "field `family`: '{}' must equal the file name '{stem}'",
                spec.family
            ),
        });
    }
    for (key, api) in spec.apis.iter() {
        for (i, name) in api.differentiable.iter().enumerate() {
            if !api.args.iter().any(|(n, _)| n == name) {
                return Err(SpecError {
                    file: file.to_path_buf(),
                    message: format!(
                        "field `apis.{key}.differentiable[{i}]`: '{name}' is not an argument of {}",
                        api.api
                    ),
                });
            }
        }
    }
    Ok(spec)
}

/// Reads and parses one spec file.
pub fn load(file: &Path) -> Result<(Spec, String), SpecError> {
    let text = std::fs::read_to_string(file).map_err(|e| SpecError {
        file: file.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    Ok((parse(file, &text)?, text))
}

/// The spec files of a directory, sorted.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SpecError {
        file: dir.to_path_buf(),
        message: format!("cannot list specs: {e}"),
    })?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
family: demo
title: Demo
summary: s
formula: {text: t, latex: l}
apis:
  torch: {api: torch.nn.functional.l1_loss, args: {input: {type: tensor}}}
cases:
  - name: c
    apis: [torch]
    args: {input: {data: [1.0]}}
"#;

    #[test]
    fn a_valid_spec_loads() {
        let s = parse(Path::new("specs/demo.yaml"), MINIMAL).unwrap();
        assert_eq!(s.apis.get("torch").unwrap().framework(), "torch");
    }

    #[test]
    fn unknown_field_names_file_and_path() {
        let bad = MINIMAL.replace("args: {input: {data", "args: {input: {dtaa");
        let e = parse(Path::new("specs/demo.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("specs/demo.yaml: "), "{e}");
        assert!(e.contains("cases[0].args"), "{e}");
        assert!(e.contains("dtaa"), "{e}");
    }

    #[test]
    fn differentiable_must_name_an_argument() {
        let bad = MINIMAL.replace(
            "args: {input: {type: tensor}}",
            "args: {input: {type: tensor}}, differentiable: [inptu]",
        );
        let e = parse(Path::new("specs/demo.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("apis.torch.differentiable[0]"), "{e}");
        assert!(e.contains("inptu"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let bad = MINIMAL.replace("apis: [torch]", "apis: torch");
        let e = parse(Path::new("specs/demo.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cases[0].apis"), "{e}");
    }

    #[test]
    fn family_must_match_file_name() {
        let e = parse(Path::new("specs/other.yaml"), MINIMAL)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `family`"), "{e}");
    }

    #[test]
    fn bad_yaml_gives_line() {
        let e = parse(Path::new("specs/demo.yaml"), "family: [")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
    }
}
